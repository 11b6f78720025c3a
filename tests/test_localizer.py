import numpy as np
import pytest
import torch

from anomaly_vlm.errors import CheckpointError
from anomaly_vlm.io import load_image, load_mask, read_category
from anomaly_vlm.localizer import (
    Localizer,
    LocalizerConfig,
    PromptCheckpoint,
    PromptEnsemble,
    PromptLearner,
    TrainConfig,
    build_localizer,
    import_reference,
    load_prompts,
    save_prompts,
    train_prompts,
)
from anomaly_vlm.metrics import pixel_metrics

from .reference_impl import reference_maps, reference_text, reference_visual
from .synthetic import make_category


def _learner(backbone, seed=0, fp16=False):
    torch.manual_seed(seed)
    return PromptLearner(backbone.text_width, deep_prompts_fp16=fp16)


def test_prediction_shapes_and_ranges(tiny_backbone):
    localizer = Localizer(tiny_backbone, _learner(tiny_backbone)).eval()
    prediction = localizer.predict(torch.randn(3, 3, 64, 64))
    assert prediction.anomaly_map.shape == (3, 64, 64)
    assert prediction.anomaly_map.min() >= 0 and prediction.anomaly_map.max() <= 1
    assert prediction.image_score.shape == (3,)
    assert np.allclose(prediction.image_score, prediction.scores["global"])
    assert np.allclose(prediction.scores["max"], prediction.anomaly_map.reshape(3, -1).max(1))


@pytest.mark.parametrize("mode", ["max", "blend"])
def test_alternative_image_scores(tiny_backbone, mode):
    localizer = Localizer(tiny_backbone, _learner(tiny_backbone), LocalizerConfig(image_score=mode)).eval()
    p = localizer.predict(torch.randn(2, 3, 64, 64))
    expected = p.scores["max"] if mode == "max" else (p.scores["global"] + p.scores["max"]) / 2
    assert np.allclose(p.image_score, expected)


def test_compat_mode_matches_reference_numerics(tiny_backbone):
    learner = _learner(tiny_backbone, fp16=True)
    layers = (1, 2, 3, 4)
    localizer = Localizer(tiny_backbone, learner, LocalizerConfig(layers=layers, surgery_start=1, compat=True)).eval()
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    ours = localizer.predict(images)
    with torch.no_grad():
        tokens = tiny_backbone.tokenize(learner.templates())
        ctx = torch.stack([learner.normal_context, learner.abnormal_context])
        text = reference_text(tiny_backbone.model, tokens, ctx, list(learner.deep_prompts))
        patch, cls = reference_visual(tiny_backbone.model.visual, images, layers, 1)
    ref_map, ref_score = reference_maps(patch, cls, text, (64, 64))
    # The reference sums layer maps; ours is their mean.
    assert np.abs(ours.anomaly_map * len(layers) - ref_map).max() < 1e-4
    assert np.abs(ours.scores["global"] - ref_score).max() < 1e-4


def test_ensemble_text_features_are_normalized_and_per_object(tiny_backbone):
    ensemble = PromptEnsemble()
    normal, abnormal = ensemble.sentences("bottle")
    assert "a photo of a flawless bottle." in normal and "a photo of a damaged bottle." in abnormal
    features = ensemble.text_features(tiny_backbone, "bottle")
    assert features.shape == (2, 32)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(features, ensemble.text_features(tiny_backbone, "cable"))


def test_training_improves_pixel_auroc_and_checkpoint_round_trips(tmp_path, tiny_backbone):
    category = make_category(tmp_path, "widget", normal=8, defective=8, seed=0)
    samples = read_category(category)
    localizer = Localizer(tiny_backbone, _learner(tiny_backbone, seed=1), LocalizerConfig(sigma=0)).eval()
    images = torch.stack([tiny_backbone.preprocess(load_image(s.path)) for s in samples])
    masks = np.stack([load_mask(s.mask_path, (64, 64)) if s.mask_path else np.zeros((64, 64), bool) for s in samples])
    before = pixel_metrics(masks, localizer.predict(images).anomaly_map)["pixel_auroc"]

    meta = PromptCheckpoint(backbone=tiny_backbone.name, weights="none", image_size=64, text_width=32,
                            localizer=localizer.config)
    result = train_prompts(localizer, samples, tmp_path / "ckpt", meta, TrainConfig(epochs=6, lr=1e-2), progress=False)
    after = pixel_metrics(masks, localizer.eval().predict(images).anomaly_map)["pixel_auroc"]
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert after > before + 0.2 and after > 0.9

    learner, loaded_meta = load_prompts(result.checkpoint, tiny_backbone)
    assert loaded_meta.backbone == tiny_backbone.name and loaded_meta.localizer.sigma == 0
    for a, b in zip(learner.state_dict().values(), localizer.text.state_dict().values()):
        assert torch.equal(a, b)
    reloaded = Localizer(tiny_backbone, learner, loaded_meta.localizer).eval()
    assert np.allclose(reloaded.predict(images[:2]).anomaly_map, localizer.predict(images[:2]).anomaly_map, atol=1e-6)


def test_training_resumes_where_it_stopped(tmp_path, tiny_backbone):
    samples = read_category(make_category(tmp_path, "widget", normal=4, defective=4, seed=2))
    meta = PromptCheckpoint(backbone=tiny_backbone.name, weights="none", image_size=64, text_width=32)

    def run(out, epochs, resume=False, seed=5):
        localizer = Localizer(tiny_backbone, _learner(tiny_backbone, seed=seed)).eval()
        return train_prompts(localizer, samples, out, meta, TrainConfig(epochs=epochs, batch_size=4, lr=1e-2),
                             resume=resume, progress=False), localizer

    full, full_loc = run(tmp_path / "full", 3)
    run(tmp_path / "split", 2)
    resumed, resumed_loc = run(tmp_path / "split", 3, resume=True, seed=99)  # init is overwritten by the state
    assert len(resumed.epoch_losses) == 3
    assert np.allclose(resumed.epoch_losses, full.epoch_losses, atol=1e-5)
    for a, b in zip(full_loc.text.parameters(), resumed_loc.text.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_labels_only_training_uses_image_loss(tmp_path, tiny_backbone):
    samples = read_category(make_category(tmp_path, "plain", normal=4, defective=4, masks=False))
    assert not any(s.pixel_truth for s in samples)
    localizer = Localizer(tiny_backbone, _learner(tiny_backbone)).eval()
    meta = PromptCheckpoint(backbone=tiny_backbone.name, weights="none", image_size=64, text_width=32)
    result = train_prompts(localizer, samples, tmp_path / "c", meta, TrainConfig(epochs=2, lr=1e-2), progress=False)
    assert all(np.isfinite(result.epoch_losses)) and result.epoch_losses[0] < 1.0  # CE only, no segmentation terms


def test_checkpoint_for_another_backbone_is_refused(tmp_path, tiny_backbone):
    learner = _learner(tiny_backbone)
    meta = PromptCheckpoint(backbone="ViT-L-14-336", weights="openai", image_size=518, text_width=32)
    save_prompts(tmp_path / "ck", learner, meta)
    with pytest.raises(CheckpointError, match="trained for backbone ViT-L-14-336.*--backbone ViT-L-14-336"):
        load_prompts(tmp_path / "ck", tiny_backbone)
    with pytest.raises(CheckpointError, match="not a prompt checkpoint"):
        load_prompts(tmp_path, tiny_backbone)


def _reference_checkpoint(path, width=32, seed=0):
    torch.manual_seed(seed)
    state = {
        "ctx_pos": torch.randn(1, 1, 12, width) * 0.02,
        "ctx_neg": torch.randn(1, 1, 12, width) * 0.02,
        **{f"compound_prompts_text.{i}": torch.randn(4, width) * 0.02 for i in range(8)},
        "compound_prompt_projections.0.weight": torch.randn(8, width),
    }
    torch.save({"prompt_learner": state}, path)
    return state


def test_import_reference_checkpoint(tmp_path, tiny_backbone):
    state = _reference_checkpoint(tmp_path / "epoch_15.pth")
    out = import_reference(tmp_path / "epoch_15.pth", tmp_path / "imported", backbone=tiny_backbone.name,
                           weights="none", image_size=64, layers=(4,))
    learner, meta = load_prompts(out, tiny_backbone)
    assert meta.localizer.compat and learner.deep_prompts_fp16 and meta.localizer.layers == (4,)
    assert torch.equal(learner.normal_context, state["ctx_pos"][0, 0])
    assert torch.equal(learner.abnormal_context, state["ctx_neg"][0, 0])
    assert torch.equal(learner.deep_prompts[7], state["compound_prompts_text.7"])
    localizer = build_localizer(out, backbone={"device": "cpu"})
    assert localizer.config.compat and localizer.layers == (4,) and localizer.backbone.image_size == 64


def test_import_refuses_pickled_code_and_foreign_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"prompt_learner": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to load"):
        import_reference(tmp_path / "evil.pth", tmp_path / "out")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an AnomalyCLIP checkpoint"):
        import_reference(tmp_path / "other.pth", tmp_path / "out")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch.save zip"):
        import_reference(tmp_path / "text.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists()
