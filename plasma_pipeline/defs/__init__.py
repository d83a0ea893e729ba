"""The Dagster layer: thin assets over the stage libraries, gathered into one Definitions per recipe."""


import dagster as dg

from plasma_pipeline.recipe import Recipe


def build_defs(recipe: Recipe) -> dg.Definitions:
    from plasma_pipeline.defs.chat_assets import chat_assets
    from plasma_pipeline.defs.common import CHECK_MANIFEST, manifest_checks
    from plasma_pipeline.defs.data_assets import data_assets
    from plasma_pipeline.defs.mix_search_assets import mix_search_assets
    from plasma_pipeline.defs.runs import dead_run_sensor
    from plasma_pipeline.defs.train_assets import training_assets

    data = data_assets(recipe)
    assets = data + training_assets(recipe) + chat_assets(recipe)
    search = mix_search_assets(recipe)  # none without a `mix_search:` section
    data_keys = [k for a in data for k in a.keys]
    automated = [k for a in assets for k in a.keys if a.automation_conditions_by_key.get(k) is not None]
    all_keys = [k for a in assets for k in a.keys]
    return dg.Definitions(
        assets=assets + search,
        asset_checks=[manifest_checks(recipe, all_keys)],
        # Running from the start, so `dagster dev` propagates a change through the data stages by itself: a
        # rematerialized parent or an edited recipe slice starts the children. Training assets are not targeted.
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "data_stages_follow_parents", target=dg.AssetSelection.assets(*automated),
                default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
                description="Starts data stages (2-7, 9, 10) whose parents changed or whose recipe slice changed.",
            ),
            dead_run_sensor(),  # marks runs of killed processes failed and frees their gpu slot
        ],
        jobs=[
            dg.define_asset_job("data_job", selection=dg.AssetSelection.assets(*data_keys),
                                description="Stages 1-7: raw text to packed token shards."),
            dg.define_asset_job("everything", selection=dg.AssetSelection.all(), description="All twelve stages."),
            dg.define_asset_job("verify_store", selection=dg.AssetSelection.checks(
                *[dg.AssetCheckKey(k, CHECK_MANIFEST) for k in all_keys]),
                                description="Re-hash every stored version Dagster recorded against its manifest."),
        ],
        resources={"pipes": dg.PipesSubprocessClient()},
    )
