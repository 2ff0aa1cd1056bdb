from pathlib import Path
import pytest

from noisystudent.config import Config, diff_keys
from noisystudent.errors import UserError


def test_defaults_are_the_digits_demo_and_valid():
    cfg = Config()
    assert cfg.data.source == "digits"
    assert cfg.noise.drop_path == pytest.approx(0.2)  # survival 0.8 at the last block
    cfg.validate()


def test_yaml_round_trip(tmp_path):
    cfg = Config().with_overrides(["teacher.epochs=7", "model.names=[resnet8, resnet20]"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    back = Config.from_yaml(p)
    assert back == cfg
    assert back.teacher.epochs == 7 and back.model.names == ["resnet8", "resnet20"]


def test_overrides_parse_types():
    cfg = Config().with_overrides(["pseudo.threshold=0.3", "noise.noise_teacher=true", "student.lr=1",
                                   "model.names=resnet8,resnet14", "noise.randaugment="])
    assert cfg.pseudo.threshold == 0.3
    assert cfg.noise.noise_teacher is True
    assert isinstance(cfg.student.lr, float) and cfg.student.lr == 1.0
    assert cfg.model.names == ["resnet8", "resnet14"]
    assert cfg.noise.randaugment == ""


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-9 and 3e-4 as strings; a float key takes them as numbers
    cfg = Config().with_overrides(["student.lr=3e-4", "teacher.lr=1E-2", "teacher.weight_decay=5.0e-4"])
    assert (cfg.student.lr, cfg.teacher.lr, cfg.teacher.weight_decay) == (3e-4, 1e-2, 5e-4)
    p = tmp_path / "c.yaml"
    p.write_text("student:\n  lr: 2e-3\n")
    assert Config.from_yaml(p).student.lr == 2e-3
    with pytest.raises(UserError, match="student.lr: expected a number, got 'e-3'"):
        Config().with_overrides(["student.lr=e-3"])
    with pytest.raises(UserError, match="teacher.epochs: expected an integer, got '1e3'"):
        Config().with_overrides(["teacher.epochs=1e3"])  # an integer key stays strict


@pytest.mark.parametrize("override, message", [
    ("teacher.epoch=5", "unknown config key 'teacher.epoch' (did you mean 'epochs'?)"),
    ("techer.epochs=5", "unknown config key 'techer'"),
    ("teacher.epochs=five", "teacher.epochs: expected an integer, got 'five'"),
    ("noise.noise_teacher=1", "noise.noise_teacher: expected true or false"),
    ("pseudo.mode=fuzzy", "pseudo.mode: 'fuzzy' is not one of soft, hard"),
    ("pseudo.threshold=1.5", "pseudo.threshold: expected a value in [0.0, 1.0)"),
    ("noise.pixel_noise=-0.1", "noise.pixel_noise: expected a value in [0.0, 1.0]"),
    ("noise.mixup=-1", "noise.mixup"),
    ("teacher.epochs", "expected KEY=VALUE"),
    ("data.workers=-1", "data.workers"),
    ("data.validation=-5", "data.validation"),
    ("pseudo.curriculum=[0.5,0]", "pseudo.curriculum[1]: expected a value in (0.0, 1.0]"),
    ("pseudo.curriculum=0.5,1.5", "pseudo.curriculum[1]: expected a value in (0.0, 1.0]"),
    ("pseudo.curriculum=half", "pseudo.curriculum[0]: expected a number, got 'half'"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError) as e:
        Config().with_overrides([override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_unknown_key_and_wrong_type(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("teacher:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown config key 'teacher.learning_rate'"):
        Config.from_yaml(p)
    p.write_text("teacher: 3\n")
    with pytest.raises(UserError, match=r"teacher: expected a mapping"):
        Config.from_yaml(p)
    p.write_text("teacher: [1\n")
    with pytest.raises(UserError, match=r"invalid YAML"):
        Config.from_yaml(p)
    with pytest.raises(UserError, match=r"cannot read config file"):
        Config.from_yaml(tmp_path / "missing.yaml")


def test_hash_ignores_where_the_run_is_written_and_diff_names_changes():
    a = Config()
    b = Config().with_overrides(["name=other", "out_dir=/tmp/x"])
    c = Config().with_overrides(["teacher.epochs=3", "pseudo.mode=hard"])
    assert a.hash() == b.hash()
    assert a.hash() != c.hash()
    assert diff_keys(a.hash_dict(), c.hash_dict()) == ["pseudo.mode", "teacher.epochs"]


@pytest.mark.parametrize(("section", "key", "other"), [("model", "warm_start", "true"), ("noise", "pixel_noise", "0.05"),
                                                        ("noise", "mixup", "0.4"), ("pseudo", "curriculum", "[0.6,1.0]")])
def test_settings_added_later_leave_the_hash_at_their_default(section, key, other):
    # run directories and benchmark records made before the setting existed keep their hash
    a = Config()
    assert key not in a.hash_dict()[section]
    assert a.hash() == a.with_overrides([f"{section}.{key}={getattr(getattr(a, section), key)}"]).hash()
    changed = a.with_overrides([f"{section}.{key}={other}"])
    assert changed.hash() != a.hash() and diff_keys(a.hash_dict(), changed.hash_dict()) == [f"{section}.{key}"]


def test_inference_batch_size_does_not_change_the_hash():
    # it was hashed at 512 before it became 128: hashed at 512 whatever it is, earlier hashes stay valid
    a = Config()
    assert a.pseudo.batch_size == 128 and a.hash_dict()["pseudo"]["batch_size"] == 512
    assert a.hash() == a.with_overrides(["pseudo.batch_size=512"]).hash() == a.with_overrides(["pseudo.batch_size=7"]).hash()


def test_curriculum_for_round_repeats_the_last_and_defaults_to_all():
    assert [Config().curriculum_for_round(k) for k in (1, 2, 5)] == [1.0, 1.0, 1.0]
    cfg = Config().with_overrides(["pseudo.curriculum=0.6,0.8,1"])  # the comma form parses numbers
    assert cfg.pseudo.curriculum == [0.6, 0.8, 1.0]
    assert [cfg.curriculum_for_round(k) for k in (1, 2, 3, 4)] == [0.6, 0.8, 1.0, 1.0]
    assert Config().with_overrides(["pseudo.curriculum=[0.5]"]).curriculum_for_round(3) == 0.5


def test_model_for_round_repeats_the_last():
    cfg = Config().with_overrides(["model.names=[a, b, c]"])
    assert [cfg.model_for_round(k) for k in range(5)] == ["a", "b", "c", "c", "c"]


def test_folder_source_needs_directories():
    with pytest.raises(UserError, match="data.labeled"):
        Config().with_overrides(["data.source=folder"])


def test_validation_needs_a_pool_with_labels_and_cache_settings_do_not_change_the_hash():
    with pytest.raises(UserError, match="data.validation: needs an unlabeled pool with known labels"):
        Config().with_overrides(["data.source=folder", "data.labeled=a", "data.unlabeled=b", "data.validation=10"])
    a = Config()
    b = a.with_overrides(["data.cache=false", "data.cache_dir=/elsewhere", "data.workers=3"])
    assert a.hash() == b.hash() and a.cache_root() == Path("runs/cache") and b.cache_root() is None
    assert a.hash() != a.with_overrides(["data.validation=100"]).hash()
