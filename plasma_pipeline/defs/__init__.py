"""The Dagster layer: thin assets over the stage libraries, gathered into one Definitions per recipe."""


import dagster as dg

from plasma_pipeline.recipe import Recipe


def build_defs(recipe: Recipe) -> dg.Definitions:
    from plasma_pipeline.defs.chat_assets import chat_assets
    from plasma_pipeline.defs.data_assets import data_assets
    from plasma_pipeline.defs.train_assets import training_assets

    data = data_assets(recipe)
    assets = data + training_assets(recipe) + chat_assets(recipe)
    data_keys = [k for a in data for k in a.keys]
    return dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job("data_job", selection=dg.AssetSelection.assets(*data_keys),
                                description="Stages 1-7: raw text to packed token shards."),
            dg.define_asset_job("everything", selection=dg.AssetSelection.all(), description="All twelve stages."),
        ],
        resources={"pipes": dg.PipesSubprocessClient()},
    )
