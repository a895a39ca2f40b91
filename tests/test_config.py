import re
from pathlib import Path

import pytest

from compkit.config import available_competitions, load_config, parse_config
from compkit.errors import ConfigError

MINIMAL = """
slug = "tiny"
task = "match"
source = "synthetic"
[synthetic]
[columns]
id = "posting_id"
label = "label_group"
text = "title"
[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
"""


def parse(extra: str = "", base: str = MINIMAL):
    return parse_config(base + extra, source="tiny.toml")


@pytest.mark.parametrize("slug", ["shopee-product-matching", "happy-whale-and-dolphin", "demo-match", "demo-identify"])
def test_shipped_competitions_load(slug):
    config = load_config(slug)
    assert config.slug == slug
    assert slug in available_competitions()


def test_happywhale_config_fixes_species_typos():
    fixes = load_config("happy-whale-and-dolphin").fixes["species"]
    assert fixes["bottlenose_dolpin"] == "bottlenose_dolphin"
    assert fixes["kiler_whale"] == "killer_whale"
    assert fixes["globis"] == fixes["pilot_whale"] == "short_finned_pilot_whale"


def test_minimal_config_gets_defaults_by_task():
    config = parse()
    assert config.fold_strategy == "group"
    assert config.folds.n_splits == 5
    identify = parse(base=MINIMAL.replace('task = "match"', 'task = "identify"'))
    assert identify.fold_strategy == "stratified"


def test_config_rejects_unknown_key_naming_file_and_key():
    with pytest.raises(ConfigError, match=r"tiny\.toml: folds\.n_split: unknown key"):
        parse("[folds]\nn_split = 3\n")


def test_config_rejects_wrong_type_naming_key():
    with pytest.raises(ConfigError, match=r"tiny\.toml: folds\.seed: expected an integer, got 'abc'"):
        parse("[folds]\nseed = 'abc'\n")


def test_config_rejects_bool_where_int_expected():
    with pytest.raises(ConfigError, match="folds.n_splits: expected an integer"):
        parse("[folds]\nn_splits = true\n")


def test_config_rejects_missing_required_key():
    with pytest.raises(ConfigError, match=r"tiny\.toml: columns\.label: missing required key"):
        parse_config(MINIMAL.replace('label = "label_group"', ""), source="tiny.toml")


def test_config_rejects_bad_choice_listing_valid_ones():
    with pytest.raises(ConfigError, match=r"task: must be one of 'match', 'identify', got 'matching'"):
        parse_config(MINIMAL.replace('task = "match"', 'task = "matching"'), source="tiny.toml")


def test_config_rejects_n_splits_below_two():
    with pytest.raises(ConfigError, match="n_splits must be >= 2, got n_splits=1"):
        parse("[folds]\nn_splits = 1\n")


def test_config_rejects_model_needing_an_undeclared_column():
    with pytest.raises(ConfigError, match="model 'img' of kind 'image' needs columns.image"):
        parse('[[models]]\nname = "img"\nkind = "image"\nbackbone = "resnet18"\n')


def test_config_rejects_unknown_model_kind_and_key():
    with pytest.raises(ConfigError, match=r"models\[0\]\.kind: must be one of"):
        parse('[[models]]\nname = "m"\nkind = "cnn"\n')
    with pytest.raises(ConfigError, match=r"models\[0\]\.ngram: unknown key"):
        parse('[[models]]\nname = "m"\nkind = "tfidf"\nngram = [1, 2]\n')


def test_config_rejects_duplicate_model_names():
    model = '[[models]]\nname = "m"\nkind = "tfidf"\n'
    with pytest.raises(ConfigError, match="duplicate model name 'm'"):
        parse(model + model)


def test_config_rejects_invalid_toml_naming_file():
    with pytest.raises(ConfigError, match=r"tiny\.toml: invalid TOML"):
        parse("[folds\n")


def test_config_nested_model_tables_are_typed():
    config = parse(
        '[[models]]\nname = "t"\nkind = "tfidf"\nanalyzer = "char_wb"\nngram_range = [2, 4]\n'
        "[postprocess]\nthreshold = [0, 1]\n"
    )
    assert config.models[0].ngram_range == (2, 4)
    assert config.postprocess.threshold == (0.0, 1.0)
    assert isinstance(config.postprocess.threshold[0], float)


def test_load_config_by_path_and_unknown_slug(tmp_path: Path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "competition.toml").write_text(MINIMAL)
    assert load_config(str(folder)).slug == "tiny"
    assert load_config(str(folder / "competition.toml")).slug == "tiny"
    with pytest.raises(ConfigError, match="unknown competition 'no-such-comp'.*available:.*demo-match"):
        load_config("no-such-comp")


def test_local_competitions_folder_wins_over_shipped(tmp_path: Path, monkeypatch):
    local = tmp_path / "competitions" / "demo-match"
    local.mkdir(parents=True)
    (local / "competition.toml").write_text(MINIMAL.replace('slug = "tiny"', 'slug = "demo-match"'))
    monkeypatch.chdir(tmp_path)
    assert load_config("demo-match").synthetic.n_train_groups == 400
    assert load_config("demo-match").title == ""


@pytest.mark.parametrize(
    "edit, message",
    [
        (('slug = "', 'slug = "../../'), "slug '../../"),
        (('slug = "', 'slug = ".'), "slug '."),
        (('name = "', 'name = "../../../../evil-'), "models[0].name '../../../../evil-"),
        (('name = "', 'name = "a/b'), "models[0].name 'a/b"),
        (('name = "', 'name = "ensemble" #'), "models[0].name 'ensemble' is reserved"),
    ],
)
def test_slugs_and_model_names_that_could_leave_the_workspace_are_refused_at_load(edit, message):
    text = (MINIMAL + '\n[[models]]\nname = "words"\nkind = "tfidf"\n').replace(*edit, 1)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, source="bad.toml")


def test_workspace_paths_refuse_a_name_with_a_path_separator_as_a_second_guard(tmp_path):
    from compkit.workspace import Workspace

    with pytest.raises(ConfigError, match="must be letters, digits"):
        Workspace.for_competition("../escape", tmp_path)
    workspace = Workspace(tmp_path / "w")
    for path_of in (lambda n: workspace.model_dir(n, 0), workspace.tuned_params, workspace.oof_csv,
                    lambda n: workspace.embeddings_dir(n, 0)):
        with pytest.raises(ConfigError, match="model '../x'"):
            path_of("../x")
    assert workspace.model_dir("resnet-48.v2_b", 0) == tmp_path / "w" / "models" / "resnet-48.v2_b" / "fold0"


@pytest.mark.parametrize(
    "model, message",
    [
        ('kind = "image"\nbackbone = "test_resnet"\ntrain = { epochs = -1 }', "epochs must be >= 0"),
        ('kind = "image"\nbackbone = "test_resnet"\nimage_size = 0', "image_size must be >= 8, got image_size=0"),
        ('kind = "image"\nbackbone = "test_resnet"\ntrain = { lr = 0.0 }', "lr must be > 0"),
        ('kind = "image"\nbackbone = "test_resnet"\nhead = { scale = -1.0 }', "scale must be > 0"),
        ('kind = "tfidf"\nngram_range = [3, 1]', "ngram_range must be [low, high] with 1 <= low <= high"),
        ('kind = "text"\nencoder = "x"\nmax_length = 0', "max_length must be >= 1"),
    ],
)
def test_settings_that_would_fail_later_are_refused_at_load(model, message):
    text = MINIMAL + f'\n[[models]]\nname = "m"\n{model}\n'
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, source="bad.toml")


@pytest.mark.parametrize(
    "postprocess, message",
    [
        ("default_threshold = 7", "default_threshold must be in [-1, 1]"),
        ("threshold = [0.2, 1.5]", "threshold must lie within [-1, 1]"),
        ("top_n = 0", "top_n must be >= 1"),
    ],
)
def test_postprocess_values_outside_what_a_cosine_can_be_are_refused(postprocess, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(MINIMAL + f"\n[postprocess]\n{postprocess}\n", source="bad.toml")


def test_a_negative_test_shard_size_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=re.escape("test_shard_rows must be >= 0 (0: one task per fold), got -5")):
        parse_config(MINIMAL + "\n[embeddings]\ntest_shard_rows = -5\n", source="bad.toml")


def test_an_unknown_backbone_is_refused_before_any_model_trains(tmp_path):
    from compkit.embeddings.runner import run_models
    from compkit.workspace import Workspace

    config = parse_config(MINIMAL.replace('text = "title"', 'text = "title"\nimage = "image"')
                          + '\n[[models]]\nname = "words"\nkind = "tfidf"\n'
                          + '\n[[models]]\nname = "cnn"\nkind = "image"\nbackbone = "resnet_9000"\n', source="x.toml")
    with pytest.raises(ConfigError, match=r"models\[1\].backbone 'resnet_9000' of model 'cnn' is not a timm model"):
        run_models(config, Workspace(tmp_path / "w"), folds=[0])
