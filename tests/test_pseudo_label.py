import torch
import pytest

from noisystudent.pseudo_label import PseudoLabels, accuracy_stats, make_targets, predict, select


def _pl(hard, conf, k=3):
    hard = torch.tensor(hard)
    conf = torch.tensor(conf, dtype=torch.float32)
    prob = torch.full((len(hard), k), 0.0)
    prob[torch.arange(len(hard)), hard] = conf
    rest = (1 - conf) / (k - 1)
    prob = torch.where(prob == 0, rest.unsqueeze(1), prob)
    p, i = prob.sort(1, descending=True)
    return PseudoLabels(hard, conf, i, p)


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are a fixed linear map of the mean pixel (deterministic, 3 classes)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        return torch.cat([m * 2, -m, m * 0.5], 1)


def test_predict_soft_labels_sum_to_one_and_temperature_flattens():
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    p1 = predict(_Fixed(), images, mean=mean, std=std, temperature=1.0, batch_size=16, progress=False)
    p4 = predict(_Fixed(), images, mean=mean, std=std, temperature=4.0, batch_size=16, progress=False)
    assert torch.allclose(p1.topk_prob.sum(1), torch.ones(50), atol=1e-5)
    assert torch.allclose(p4.topk_prob.sum(1), torch.ones(50), atol=1e-5)
    assert (p4.topk_prob[:, 0] <= p1.topk_prob[:, 0] + 1e-6).all()  # higher T -> flatter
    assert torch.equal(p1.hard, p4.hard)
    assert torch.allclose(p1.confidence, p4.confidence)  # threshold quantity is at T=1
    assert torch.allclose(p1.confidence, p1.topk_prob[:, 0])
    top1 = predict(_Fixed(), images, mean=mean, std=std, topk=1, progress=False)
    assert top1.topk_index.shape == (50, 1) and torch.equal(top1.topk_index[:, 0], p1.hard)


def test_threshold_keeps_confident_only():
    pl = _pl([0, 1, 2, 0, 1], [0.9, 0.4, 0.8, 0.5, 0.95])
    chosen, stats = select(pl, num_classes=3, threshold=0.6, balance=False)
    assert chosen.tolist() == [0, 2, 4]
    assert stats["passed_threshold"] == 3 and stats["kept_fraction"] == pytest.approx(0.6)
    assert stats["per_class_before"] == [1, 1, 1]


def test_balance_gives_target_counts_keeping_most_confident_and_duplicating():
    # class 0: 5 images, class 1: 1 image, class 2: 3 images
    hard = [0, 0, 0, 0, 0, 1, 2, 2, 2]
    conf = [0.5, 0.9, 0.7, 0.6, 0.8, 0.99, 0.4, 0.6, 0.5]
    pl = _pl(hard, conf)
    chosen, stats = select(pl, num_classes=3, threshold=0.0, balance=True, per_class=3)
    assert stats["per_class_after"] == [3, 3, 3]
    counts = torch.bincount(chosen, minlength=9).tolist()
    assert counts[:5] == [0, 1, 1, 0, 1]        # the three most confident of class 0
    assert counts[5] == 3                        # the lone class-1 image duplicated
    assert counts[6:] == [1, 1, 1]
    # default target: kept / classes
    _, stats = select(pl, num_classes=3, balance=True)
    assert stats["target_per_class"] == 3


def test_curriculum_fraction_keeps_each_class_most_confident_and_balances_to_the_same_target():
    # class 0: 5 images, class 1: 2, class 2: 3; the threshold drops image 9
    hard = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]
    conf = [0.5, 0.9, 0.7, 0.6, 0.8, 0.99, 0.95, 0.4, 0.6, 0.3]
    pl = _pl(hard, conf)
    full, full_stats = select(pl, num_classes=3, threshold=0.35, balance=True)
    chosen, stats = select(pl, num_classes=3, threshold=0.35, balance=True, fraction=0.4)
    assert stats["target_per_class"] == full_stats["target_per_class"] == 3  # 9 passed / 3 classes
    assert stats["per_class_after"] == [3, 3, 3] and len(chosen) == len(full)  # the same steps
    counts = torch.bincount(chosen, minlength=10).tolist()
    assert counts[:5] == [0, 2, 0, 0, 1]   # ceil(0.4 * 5) = 2 most confident of class 0, cycled to 3
    assert counts[5:7] == [3, 0]           # ceil(0.4 * 2) = 1
    assert counts[7:] == [0, 3, 0]         # ceil(0.4 * 2 passed) = 1
    assert stats["unique_selected"] == 4 and stats["curriculum_fraction"] == 0.4
    assert "curriculum_fraction" not in full_stats
    # without balancing: only the kept part, no repeats
    chosen, _ = select(pl, num_classes=3, threshold=0.35, balance=False, fraction=0.4)
    assert chosen.tolist() == [1, 4, 5, 8]
    # a fraction of 1 is the plain selection
    assert torch.equal(select(pl, num_classes=3, threshold=0.35, fraction=1.0)[0], full)


def test_balance_with_an_empty_class_warns_and_skips(caplog):
    pl = _pl([0, 0, 1], [0.9, 0.8, 0.7])
    chosen, stats = select(pl, num_classes=3, balance=True, per_class=2)
    assert stats["per_class_after"] == [2, 2, 0]
    assert "no image passed the threshold" in caplog.text


def test_targets_soft_and_hard_and_accuracy():
    pl = _pl([0, 2, 1], [0.7, 0.6, 0.9])
    chosen = torch.tensor([0, 2])
    soft = make_targets(pl, chosen, "soft").dense(torch.arange(2), 3)
    assert torch.allclose(soft.sum(1), torch.ones(2))
    assert soft[0, 0] == pytest.approx(0.7) and soft[1, 1] == pytest.approx(0.9)
    hard = make_targets(pl, chosen, "hard").dense(torch.arange(2), 3)
    assert hard.tolist() == [[1, 0, 0], [0, 1, 0]]
    acc = accuracy_stats(pl, chosen, torch.tensor([0, 1, 1]))
    assert acc["pseudo_label_accuracy"] == pytest.approx(2 / 3)
    assert acc["pseudo_label_accuracy_selected"] == pytest.approx(1.0)
    assert accuracy_stats(pl, chosen, None)["pseudo_label_accuracy"] is None


def test_save_load_round_trip(tmp_path):
    pl = _pl([0, 2, 1], [0.7, 0.6, 0.9])
    pl.save(tmp_path / "p.safetensors", temperature=2.0)
    back = PseudoLabels.load(tmp_path / "p.safetensors")
    for a, b in zip((pl.hard, pl.confidence, pl.topk_index, pl.topk_prob),
                    (back.hard, back.confidence, back.topk_index, back.topk_prob)):
        assert torch.equal(a, b)
    assert back.hard.dtype == back.topk_index.dtype == torch.int64


class _Linear(torch.nn.Module):
    """Logits = a fixed random map of the flattened pixels: many classes, deterministic."""

    def __init__(self, classes, pixels):
        super().__init__()
        self.w = torch.randn(pixels, classes, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("classes, topk, k", [(10, 0, 10), (32, 0, 32), (1000, 0, 10), (1000, 5, 5),
                                              (40000, 3, 3), (3, 7, 3)])
def test_stored_k_and_compact_storage_keep_the_hard_labels_and_confidences(tmp_path, classes, topk, k):
    from safetensors import safe_open

    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    model = _Linear(classes, 16)
    mean, std = torch.tensor([128.0]), torch.tensor([64.0])
    full = predict(model, images, mean=mean, std=std, topk=classes, progress=False)
    pl = predict(model, images, mean=mean, std=std, topk=topk, progress=False)
    pl.save(tmp_path / "p.safetensors", temperature=1.0)
    back = PseudoLabels.load(tmp_path / "p.safetensors")
    assert back.topk_index.shape == (40, k)
    assert torch.equal(back.hard, full.hard) and torch.equal(back.confidence, full.confidence)
    assert torch.equal(back.topk_index, full.topk_index[:, :k]) and torch.equal(back.topk_prob, full.topk_prob[:, :k])
    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as f:
        assert f.get_tensor("topk_index").dtype == (torch.int16 if classes < 2**15 else torch.int32)


def test_predictions_of_a_real_model_do_not_depend_on_the_inference_batch():
    # why pseudo.batch_size is left out of the config hash: eval mode, each image on its own
    from noisystudent.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1, drop_rate=0.5, drop_path_rate=0.2)
    model(torch.randn(32, 1, 28, 28))  # train mode: moves BN running statistics off their init
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.35])
    runs = [predict(model, images, mean=mean, std=std, batch_size=b, progress=False) for b in (7, 128, 512)]
    for other in runs[1:]:
        assert torch.equal(other.hard, runs[0].hard) and torch.equal(other.topk_index, runs[0].topk_index)
        assert torch.allclose(other.topk_prob, runs[0].topk_prob, atol=1e-6)
        assert torch.allclose(other.confidence, runs[0].confidence, atol=1e-6)
