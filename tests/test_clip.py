import pytest
import torch
import torch.nn.functional as F

from anomaly_vlm.clip import TINY_MODEL, BackboneConfig, default_taps, encode_image_dense, encode_text_prompted, load_backbone
from anomaly_vlm.errors import WeightsNotFoundError

from .reference_impl import reference_text, reference_visual


def test_default_taps_scale_with_depth():
    assert default_taps(24) == (6, 12, 18, 24)
    assert default_taps(12) == (3, 6, 9, 12)
    assert default_taps(4) == (1, 2, 3, 4)


def test_positional_embedding_resized_bilinear(tiny_backbone):
    visual = tiny_backbone.model.visual
    assert tiny_backbone.grid_size == 8 and tuple(visual.positional_embedding.shape) == (65, 64)
    torch.manual_seed(0)
    native = load_backbone(BackboneConfig(name=TINY_MODEL, weights="none", image_size=None, device="cpu"))
    torch.manual_seed(0)
    larger = load_backbone(BackboneConfig(name=TINY_MODEL, weights="none", image_size=96, device="cpu"))
    old = native.model.visual.positional_embedding
    new = larger.model.visual.positional_embedding
    assert larger.grid_size == 12 and new.shape[0] == 145
    assert torch.equal(new[0], old[0])  # class position untouched
    grid = old[1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(new[1:], expected.permute(0, 2, 3, 1).reshape(144, -1))


def test_image_size_rounds_to_patch_multiple():
    backbone = load_backbone(BackboneConfig(name=TINY_MODEL, weights="none", image_size=70, device="cpu"))
    assert backbone.image_size == 72 and backbone.grid_size == 9


def test_dense_features_shapes_and_plain_path_equals_open_clip(tiny_backbone):
    images = torch.randn(2, 3, 64, 64)
    visual = tiny_backbone.model.visual
    features = encode_image_dense(visual, images, (1, 2, 3, 4), surgery_start=1)
    assert [tuple(t.shape) for t in features.patch_tokens] == [(2, 64, 32)] * 4
    assert torch.allclose(features.patch_tokens[0].norm(dim=-1), torch.ones(2, 64), atol=1e-5)
    plain = encode_image_dense(visual, images, (4,), surgery_start=None)
    expected = F.normalize(tiny_backbone.model.encode_image(images), dim=-1)
    assert torch.allclose(plain.global_feature, expected, atol=1e-5)


@pytest.mark.parametrize("surgery_start", [1, 2, 3])
def test_vv_surgery_matches_plain_recomputation(tiny_backbone, surgery_start):
    torch.manual_seed(surgery_start)
    images = torch.randn(2, 3, 64, 64)
    visual = tiny_backbone.model.visual
    taps = (1, 2, 3, 4)
    ours = encode_image_dense(visual, images, taps, surgery_start, global_ln_post=False)
    with torch.no_grad():
        patch, cls = reference_visual(visual, images, taps, surgery_start)
    for a, b in zip(ours.patch_tokens, patch):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(ours.global_feature, cls, atol=1e-5)
    # The global feature must not depend on the surgery: it is the ordinary stream.
    plain = encode_image_dense(visual, images, taps, None, global_ln_post=False)
    assert torch.allclose(plain.global_feature, ours.global_feature, atol=1e-5)


def test_layer_taps_are_distinct(tiny_backbone):
    features = encode_image_dense(tiny_backbone.model.visual, torch.randn(1, 3, 64, 64), (1, 2, 3, 4), 1)
    tokens = features.patch_tokens
    for i in range(len(tokens)):
        for j in range(i + 1, len(tokens)):
            assert not torch.allclose(tokens[i], tokens[j], atol=1e-3)


def test_prompted_text_matches_plain_recomputation(tiny_backbone):
    model = tiny_backbone.model
    tokens = tiny_backbone.tokenize(["X X X X X X X X X X X X object.", "X X X X X X X X X X X X damaged object."])
    torch.manual_seed(0)
    ctx = torch.randn(2, 12, 32) * 0.02
    deep = [torch.randn(4, 32) * 0.02 for _ in range(8)]
    ours = encode_text_prompted(model, tokens, ctx, deep, deep_prompts_fp16=True)
    with torch.no_grad():
        expected = reference_text(model, tokens, ctx, deep)
    assert ours.shape == (2, 32)
    assert torch.allclose(ours, expected, atol=1e-6)
    # Without prompts it is exactly CLIP's own text encoder.
    plain = encode_text_prompted(model, tokens)
    assert torch.allclose(plain, F.normalize(model.encode_text(tokens), dim=-1), atol=1e-6)


def test_missing_weights_give_instructions_not_a_traceback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError) as info:
        load_backbone(BackboneConfig(name="ViT-B-16", weights="openai", device="cpu"))
    message = str(info.value)
    assert "timm/vit_base_patch16_clip_224.openai" in message
    assert "--weights /path/to/" in message and "HF_HUB_OFFLINE" in message


def test_unknown_tag_and_architecture_are_named():
    with pytest.raises(WeightsNotFoundError, match="neither a file nor a pretrained tag"):
        load_backbone(BackboneConfig(name="ViT-B-16", weights="no-such-tag", device="cpu"))
    with pytest.raises(WeightsNotFoundError, match="Unknown CLIP architecture 'ViT-Q-99'"):
        load_backbone(BackboneConfig(name="ViT-Q-99", weights="none", device="cpu"))


def test_local_safetensors_weights_load(tmp_path, tiny_backbone):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in load_backbone(
        BackboneConfig(name=TINY_MODEL, weights="none", image_size=None, device="cpu")).model.state_dict().items()}
    path = tmp_path / "open_clip_model.safetensors"
    save_file(state, str(path))
    loaded = load_backbone(BackboneConfig(name=TINY_MODEL, weights=str(tmp_path), image_size=None, device="cpu"))
    assert loaded.source == str(path)
    assert torch.equal(loaded.model.visual.proj, state["visual.proj"])


def test_pickled_weights_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "weights.pt"
    torch.save({"payload": Evil()}, path)
    with pytest.raises(WeightsNotFoundError, match="pickled code is refused"):
        load_backbone(BackboneConfig(name=TINY_MODEL, weights=str(path), device="cpu"))
