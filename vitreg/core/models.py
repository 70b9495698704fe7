"""The model zoo: the ViTs the paper studies, by short readable names.

Paper: Fig. 1-2 (which families show artifacts), Fig. 3 (the 150 norm threshold), Table 3 (which
features LOST uses). The zoo holds the public checkpoints of the families the paper compares, and DINOv3
(S/B/L, 4 registers, RoPE), the newest public model with registers.

Every entry maps a short name (``dinov2_l_reg``) to a timm name and tag plus what the analyses need
to know about it. Any other timm ViT name works too (``get_spec("vit_base_patch16_224.augreg_in21k")``; timm's
``VisionTransformer`` and ``Eva`` families):
its metadata is then read from timm's pretrained config and from the architecture built on the
``meta`` device (no weights are allocated).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace
from typing import Literal

Family = Literal["dino", "dinov2", "dinov3", "deit3", "clip", "mae", "eva", "other"]
LostFeatures = Literal["q", "k", "v"]
PosInterp = Literal["dinov2_noreg", "dinov2_reg", "timm", "rope"]

#: Threshold sources, kept beside the numbers so the notebooks can print them.
THRESHOLD_NOTES = {
    "dinov2": "150: the paper's cut-off for DINOv2 ViT-g (Fig. 3), also used by [TTR] for ViT-L",
    "clip": "75: [TTR]'s cut-off for OpenCLIP ViT-B/16 (paper); their config uses 30",
    "relative": "no published cut-off: mean + 3 std of patch norms ([TTR]'s heuristic)",
    "scale_free": "no published cut-off: use the scale-free rule",
}


#: timm modules whose models are (or wrap) the plain ``VisionTransformer`` or ``Eva`` (DINOv3, EVA-02, timm's
#: RoPE ViTs): checked before anything is built.
_VIT_MODULES = ("vision_transformer", "deit", "eva")


class NotAPlainViT(ValueError):
    """A timm model that is not a plain ViT (a CNN, Swin, a distilled DeiT...): its tokens are not
    [CLS] + registers + one patch grid, so no measurement of the paper applies as written."""


class UnknownModel(KeyError):
    """A model name that is neither in the zoo nor in timm; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """What vitreg needs to know about one model.

    Args:
        key: short readable name (``dinov2_l_reg``).
        timm_name: timm architecture name (``vit_large_patch14_reg4_dinov2``).
        tag: pretrained tag (``lvd142m``); ``""`` for none.
        family: model family; decides position-embedding resizing and LOST features.
        registers: number of register tokens R.
        patch_size: patch side in pixels.
        native_resolution: resolution the weights were made for (DINOv2: 518).
        threshold: absolute outlier cut-off on patch norms (pre final LayerNorm), or None to use
            the relative rule (mean + 3 std).
        threshold_note: where the threshold comes from.
        lost_features: which of q/k/v of the last block LOST uses (Table 3 protocol).
        pos_interp: how to resize position embeddings to another resolution (``rope``: the model has no
            absolute position embedding, only rotary ones computed from the patch grid).
        paper_name: the name used in the paper's figures.
        official_files: file names of the official (non-timm) checkpoints, for the weights folder.
    """

    key: str
    timm_name: str
    tag: str
    family: Family
    registers: int
    patch_size: int
    native_resolution: int
    threshold: float | None
    threshold_note: str
    lost_features: LostFeatures
    pos_interp: PosInterp
    paper_name: str
    official_files: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        """timm name with tag: what ``timm.create_model`` takes."""
        return f"{self.timm_name}.{self.tag}" if self.tag else self.timm_name

    def to_dict(self) -> dict:
        return asdict(self)


def _dinov2(size: str, letter: str, reg: bool) -> ModelSpec:
    sizes = {"s": "small", "b": "base", "l": "large", "g": "giant"}
    timm_name = f"vit_{sizes[size]}_patch14_{'reg4_' if reg else ''}dinov2"
    hub = f"dinov2_vit{size}14{'_reg4' if reg else ''}_pretrain.pth"
    return ModelSpec(
        key=f"dinov2_{size}{'_reg' if reg else ''}",
        timm_name=timm_name,
        tag="lvd142m",
        family="dinov2",
        registers=4 if reg else 0,
        patch_size=14,
        native_resolution=518,
        threshold=150.0,
        threshold_note=THRESHOLD_NOTES["dinov2"],
        lost_features="k",
        pos_interp="dinov2_reg" if reg else "dinov2_noreg",
        paper_name=f"DINOv2 ViT-{letter}/14{' +reg' if reg else ''}",
        official_files=(hub,),
    )


def _other(key: str, full: str, family: Family, patch: int, res: int, paper: str,
           lost: LostFeatures, threshold: float | None = None, note: str = THRESHOLD_NOTES["relative"]) -> ModelSpec:
    timm_name, _, tag = full.partition(".")
    return ModelSpec(key, timm_name, tag, family, 0, patch, res, threshold, note, lost, "timm", paper)


#: The official DINOv3 checkpoint names (facebookresearch/dinov3 ``hub/backbones.py``: arch + hash).
_DINOV3_HASHES = {"s": "08c60483", "b": "73cec8be", "l": "8aa4cbdd"}


def _dinov3(size: str, letter: str, width: str) -> ModelSpec:
    """DINOv3 ViT-S/B/L/16 (LVD-1689M): a class token and 4 registers, RoPE only, 256 px native (timm's config);
    tests check both numbers against the model itself (``test_models.py``)."""
    return ModelSpec(
        key=f"dinov3_{size}", timm_name=f"vit_{width}_patch16_dinov3", tag="lvd1689m", family="dinov3", registers=4,
        patch_size=16, native_resolution=256, threshold=None, threshold_note=THRESHOLD_NOTES["scale_free"],
        lost_features="k", pos_interp="rope", paper_name=f"DINOv3 ViT-{letter}/16 +reg",
        official_files=(f"dinov3_vit{size}16_pretrain_lvd1689m-{_DINOV3_HASHES[size]}.pth",),
    )


ZOO: dict[str, ModelSpec] = {
    s.key: s
    for s in [
        _other("dino_s16", "vit_small_patch16_224.dino", "dino", 16, 224, "DINO ViT-S/16", "k"),
        _other("dino_b16", "vit_base_patch16_224.dino", "dino", 16, 224, "DINO ViT-B/16", "k"),
        *[_dinov2(s, L, r) for s, L in zip("sblg", "SBLg") for r in (False, True)],
        *[_dinov3(s, L, w) for s, L, w in zip("sbl", "SBL", ("small", "base", "large"))],
        _other("deit3_b16", "deit3_base_patch16_224.fb_in22k_ft_in1k", "deit3", 16, 224, "DeiT-III ViT-B/16", "v"),
        _other("deit3_l16", "deit3_large_patch16_224.fb_in22k_ft_in1k", "deit3", 16, 224, "DeiT-III ViT-L/16", "v"),
        _other("clip_b16_laion", "vit_base_patch16_clip_224.laion2b", "clip", 16, 224, "OpenCLIP ViT-B/16 (LAION-2B)",
               "v", 75.0, THRESHOLD_NOTES["clip"]),
        _other("clip_l14_laion", "vit_large_patch14_clip_224.laion2b", "clip", 14, 224, "OpenCLIP ViT-L/14 (LAION-2B)", "v"),
        _other("clip_b16_openai", "vit_base_patch16_clip_quickgelu_224.openai", "clip", 16, 224,
               "CLIP ViT-B/16 (OpenAI, QuickGELU)", "v"),
        _other("clip_l14_openai", "vit_large_patch14_clip_quickgelu_224.openai", "clip", 14, 224,
               "CLIP ViT-L/14 (OpenAI, QuickGELU)", "v"),
        _other("mae_b16", "vit_base_patch16_224.mae", "mae", 16, 224, "MAE ViT-B/16 (control)", "k"),
        _other("mae_l16", "vit_large_patch16_224.mae", "mae", 16, 224, "MAE ViT-L/16 (control)", "k"),
    ]
}


#: Each zoo model without registers -> its twin with 4 registers (same family, size and training data).
#: Paper: §2.2, Fig. 7, Tables 2-3 compare a model with its register twin; the public twins are DINOv2's.
REGISTER_TWINS: dict[str, str] = {f"dinov2_{s}": f"dinov2_{s}_reg" for s in "sblg"}


def register_twin(name: str) -> str | None:
    """The zoo key of ``name``'s twin with registers (``dinov2_l`` -> ``dinov2_l_reg``), or None when it has none.

    Paper: §2.2, Tables 2-3 (a model compared with its register twin). Only the zoo knows twins: the
    public register models are DINOv2's; the paper's DeiT-III and OpenCLIP twins were never released.
    """
    return REGISTER_TWINS.get(name)


def register_pairs(names: "list[str] | tuple[str, ...]") -> list[tuple[str, str]]:
    """``(without, with registers)`` pairs among ``names`` whose both models are listed, in the order of ``names``.

    Paper: Tables 2-3 (a model and its register twin, side by side).
    """
    listed = set(names)
    return [(name, twin) for name in names if (twin := register_twin(name)) is not None and twin in listed]


def get_spec(name: str) -> ModelSpec:
    """The spec of a zoo model (``dinov2_l_reg``), or of any timm ViT name (``vit_base_patch16_224.augreg_in21k``).

    Raises:
        UnknownModel: (a KeyError) the name is neither in the zoo nor a timm model, with the closest names.
        NotAPlainViT: (a ValueError) a timm model that is not a plain ViT (``resnet18``, ``swin_*``), with
            what is supported.
    """
    if name in ZOO:
        return ZOO[name]
    for spec in ZOO.values():  # a zoo model named by its timm name
        if name in (spec.full_name, spec.timm_name):
            return spec if name == spec.full_name else replace(spec, tag="")
    return _spec_from_timm(name)


def _spec_from_timm(name: str) -> ModelSpec:
    """Spec of a timm ViT outside the zoo: resolution from timm's pretrained config; patch size and
    registers from the architecture built on the ``meta`` device (shapes only, nothing allocated)."""
    import timm
    import torch

    from vitreg.core.tokens import token_counts

    arch, _, tag = name.partition(".")
    if arch not in timm.list_models():
        close = difflib.get_close_matches(name, list(ZOO) + timm.list_models("*vit*") + timm.list_pretrained("*vit*"),
                                          n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModel(f"unknown model {name!r}: not in the vitreg zoo ({', '.join(ZOO)}) nor in timm.{hint}")
    module = timm.models.model_entrypoint(arch).__module__.rpartition(".")[2]
    if module not in _VIT_MODULES:  # refused before building: a ResNet does not even take img_size
        raise NotAPlainViT(_not_a_vit_message(name, f"a model from timm.models.{module}"))
    cfg = timm.models.get_pretrained_cfg(name) if tag else None
    res = int(cfg.input_size[-1]) if cfg is not None else 224
    with torch.device("meta"):  # structure only, no weights: ViT-g in 0.7 s and no memory instead of 35 s and 4 GiB
        model = timm.create_model(arch, pretrained=False, img_size=res)
    _check_plain_vit(name, model)
    ps = model.patch_embed.patch_size
    patch = int(ps if isinstance(ps, int) else ps[0])
    family = _family(arch, module)
    _, registers = token_counts(model)
    rope_only = getattr(model, "pos_embed", None) is None
    return ModelSpec(
        key=name, timm_name=arch, tag=tag, family=family,
        registers=registers, patch_size=patch, native_resolution=res,
        threshold=None, threshold_note=THRESHOLD_NOTES["scale_free" if family in ("dinov3", "eva") else "relative"],
        lost_features="k" if family in ("dinov2", "dinov3", "eva", "other") else "v",
        pos_interp="rope" if rope_only else "timm", paper_name=name,
    )


def _family(arch: str, module: str) -> Family:
    """The family of a timm name outside the zoo: only for the labels and LOST's feature choice; token counts
    always come from the model (:func:`vitreg.core.tokens.token_counts`)."""
    for family in ("dinov3", "dinov2", "clip"):
        if family in arch:
            return family  # type: ignore[return-value]
    return "eva" if module == "eva" and arch.startswith("eva") else "other"


def _check_plain_vit(name: str, model: object) -> None:
    """Refuse a built (meta) model unless it is a timm ``VisionTransformer`` or ``Eva`` with the token layout
    vitreg reads: [CLS] (or none) + registers + the patch grid of a plain patch embedding."""
    from timm.layers import PatchEmbed
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    from vitreg.core.tokens import token_counts

    kind = type(model).__name__
    if not isinstance(model, (VisionTransformer, Eva)):
        raise NotAPlainViT(_not_a_vit_message(name, f"a {kind}"))
    if type(model.patch_embed) is not PatchEmbed:
        raise NotAPlainViT(_not_a_vit_message(name, f"a {kind} with a {type(model.patch_embed).__name__} stem"))
    try:
        token_counts(model)  # type: ignore[arg-type]
    except ValueError:
        raise NotAPlainViT(_not_a_vit_message(name, f"a {kind} with {model.num_prefix_tokens} prefix tokens "
                                                     "(a distillation token?)")) from None


def _not_a_vit_message(name: str, what: str) -> str:
    return (f"{name!r} is not a plain ViT ({what}): vitreg reads the tokens of timm's VisionTransformer, "
            f"[CLS] + registers + one grid of patches. Supported: the vitreg zoo ({', '.join(ZOO)}) and timm's "
            "plain ViTs, timm.list_models(module='vision_transformer') plus deit3_*, and timm's Eva models, "
            "timm.list_models(module='eva') (DINOv3, EVA-02; for example vit_base_patch16_224.augreg_in21k, "
            "vit_small_patch14_reg4_dinov2.lvd142m, deit3_base_patch16_224, vit_small_patch16_dinov3.lvd1689m).")
