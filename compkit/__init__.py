"""compkit: run a Kaggle retrieval competition from download to submission.

The packages, in data-flow order (each stage leaves a fingerprinted artifact in the workspace):

    shared ground   errors, progress, metrics, schema, config (the typed competition.toml),
                    workspace (every artifact path, atomic writes, manifests, the fold count),
                    submission (the format and its validation), scoring, kaggle_client,
                    neighbors/ (kNN backends behind one interface), models/ (embedders, heads, TF-IDF, phash)
    1. data/        fetch (kaggle, local, synthetic sources) -> data/;  folds -> folds.csv
    2. training/    one model on one fold: loop, steps, samplers, schedule, checkpoint, device -> models/
    3. embeddings/  OOF + test embeddings of every fold, cached (cache), and the (model, fold) runner
    4. retrieval/   OOF neighbour lists (single) and candidate tables (combined): the artifacts tuning reads
       postprocess/ pure array rules: neighbour lists -> match lists, top-5 with new_individual, rows
    5. tuning/      Optuna over the cached neighbours -> tuning/<model>.json (TunedModel)
    6. predict      each model's test and OOF CSVs with its tuned parameters
    7. ensemble/    votes / ranks of the model CSVs, tuned weights, and final (the one final CSV)
    8. submit/      upload with its ledger, the offline kernel of a code competition
    9. report/      where a model is wrong: a static HTML page built from the artifacts (`compkit inspect`)
       history      every tuning and ensemble result, appended (`compkit history`)

    stages          the one stage list: each stage's artifact, inputs and freshness
    pipeline        `compkit run`: every stage that is not fresh, in order;  status: each stage's state
    oof_gap         identify: MAP@5 on seen and new_individual queries, OOF and test (what `run` ends with)
    cli/            thin Typer commands: parse, call one library function, render

`single` and `combined` name the two model families at every floor: a trained or fitted model, and a
union / concat / score model that combines other models' embeddings.
"""

__version__ = "0.1.0"
