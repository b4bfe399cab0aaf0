"""``DenseDetector``: the base of one-stage detectors that predict at every feature-map location.

A dense detector runs backbone -> head on L feature levels and reads boxes straight off the
head's per-location predictions (no proposals, no ROI pooling). Subclasses (``RetinaNet``) add
``forward_training`` and ``forward_inference``; this class holds what they share: input
normalisation, the per-level transpose of predictions, the EMA loss normaliser and the
threshold / top-k / decode step of inference.

Shape legend:
    N        images in the batch
    L        feature levels given to the head (e.g. p3-p7)
    Hi, Wi   height and width of level i
    A        anchors (or points) per location
    K        numbers predicted per anchor: classes for scores, 4 for box deltas
    R        anchors of one image over all levels, sum_i Hi * Wi * A

Boxes are XYXY in absolute pixels of the resized input image (``ImageList.image_sizes``) until
:func:`detector_postprocess` rescales them to the requested "height" x "width".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from workbench.layers import batched_nms
from workbench.structures import Boxes, ImageList, Instances
from workbench.utils import perf
from workbench.utils.events import get_event_storage

from ..backbone import Backbone
from ..recording import SelectionSettings, active_recorder, put_record, run_stage
from .input_checks import gather_gt_instances
from .postprocessing import detector_postprocess
from .preprocess import PixelNormalizer, postprocess_per_image
from .rcnn import _draw_box_outlines

__all__ = ["DenseDetector", "permute_to_N_HWA_K"]


def permute_to_N_HWA_K(tensor: Tensor, K: int) -> Tensor:
    """Move the anchor dimension next to the locations: (N, A*K, Hi, Wi) -> (N, Hi*Wi*A, K).

    The channel axis of a dense head is anchor-major (channel a*K + k is number k of anchor a),
    which is the order anchors are generated in; after the transpose row (y*Wi + x)*A + a of the
    result belongs to anchor a at location (y, x), matching ``DefaultAnchorGenerator``.
    """
    if tensor.dim() != 4:
        raise ValueError(
            f"Expected dense predictions of shape (N, A*K, Hi, Wi), got {tuple(tensor.shape)}."
        )
    N, C, H, W = tensor.shape
    if C % K != 0:
        raise ValueError(
            f"Dense predictions have {C} channels, not a multiple of K={K} numbers per anchor."
        )
    tensor = tensor.view(N, -1, K, H, W)  # (N, A*K, Hi, Wi) -> (N, A, K, Hi, Wi)
    tensor = tensor.permute(0, 3, 4, 1, 2)  # (N, A, K, Hi, Wi) -> (N, Hi, Wi, A, K)
    return tensor.reshape(N, -1, K)  # (N, Hi, Wi, A, K) -> (N, Hi*Wi*A, K)


@dataclass
class DenseSelection:
    """What a dense detector's inference did on one image, by index (Ci candidates, Di kept).

    Attributes:
        candidates: what NMS was run on: per level the ``topk_candidates`` best (anchor, class)
            pairs above ``score_thresh``, decoded (``pred_boxes``, ``scores``, ``pred_classes``).
        level, anchor_index: (Ci,) level and anchor row of each candidate (-1 if unknown).
        nms_kept: (Ci,) bool, survived the class-wise NMS (before the top-k).
        det_candidate: (Di,) candidate row of each detection.
    """

    candidates: Instances
    level: Tensor
    anchor_index: Tensor
    nms_kept: Tensor
    det_candidate: Tensor


@dataclass
class DenseRecord:
    """Everything a RetinaNet-style detector computed (put by its ``forward_inference``).

    Attributes:
        in_features: the feature names of the L levels.
        anchors: L ``Boxes`` of Hl*Wl*A anchors.
        logits: L tensors (N, Hl*Wl*A, K) class logits (sigmoid gives the scores).
        deltas: L tensors (N, Hl*Wl*A, 4).
        head_features: L tensors (N, C, Hl, Wl), the classification tower's output (the last
            hidden layer before the class scores); None if the head put none.
        selections: per image, a :class:`DenseSelection` (None if the per-image inference
            put none); read through ``candidates``, ``candidate_level``, ``candidate_anchor``,
            ``nms_kept``, ``instances`` and ``det_candidate``.
        settings: score_thresh, nms_thresh, topk and topk_candidates as used.
        scores_of: the model's map from logits to the scores its selection used (a sigmoid for
            RetinaNet; FCOS has none and its ``scores_of`` raises, pointing to ``scores``).
        scores: L tensors (N, Hl*Wl*A, K), the scores the selection ranked, for a detector whose
            scores are not a function of the logits alone (FCOS: sqrt(sigmoid(logit) *
            sigmoid(centerness))); None when ``scores_of(logits)`` gives them. Read them
            through :meth:`scores_at`, which handles both.
        extra: other per-level head outputs by name, e.g. FCOS's "centerness": L tensors
            (N, Hl*Wl*A, 1) of logits.
    """

    in_features: List[str]
    anchors: List[Boxes]
    logits: List[Tensor]
    deltas: List[Tensor]
    head_features: Optional[List[Tensor]]
    selections: Optional[List[DenseSelection]]
    instances: List[Instances]
    settings: SelectionSettings
    scores_of: Callable[[Tensor], Tensor] = torch.sigmoid
    scores: Optional[List[Tensor]] = None
    extra: Dict[str, List[Tensor]] = field(default_factory=dict)

    def scores_at(self, image: int, level: Union[int, Tensor], anchor: Union[int, Tensor]) -> Tensor:
        """The scores the selection used, at given anchors of one image.

        Args:
            level, anchor: ints for one anchor, giving (K,); or (M,) tensors of levels and
                anchor rows, giving (M, K). Either being -1 (unknown) gives a NaN row.

        Raises:
            IndexError: naming ``image``, ``level`` or ``anchor`` when out of range.
        """
        source = self.scores if self.scores is not None else self.logits
        L = len(source)
        if not 0 <= image < source[0].shape[0]:
            raise IndexError(f"scores_at: image {image} out of range for {source[0].shape[0]} images.")
        if not isinstance(level, Tensor):
            level, anchor = torch.tensor([int(level)]), torch.tensor([int(anchor)])
            return self.scores_at(image, level, anchor)[0]
        level, anchor = level.to(source[0].device), anchor.to(source[0].device)
        if level.shape != anchor.shape or level.dim() != 1:
            raise ValueError(f"scores_at: level and anchor must be (M,) tensors of one shape, got "
                             f"{tuple(level.shape)} and {tuple(anchor.shape)}.")
        known = (level >= 0) & (anchor >= 0)
        bad = (known & (level >= L)) | (level < -1)
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise IndexError(f"scores_at: level {int(level[j])} (entry {j}) out of range for {L} "
                             "levels (-1 means unknown).")
        out = torch.full((len(level), source[0].shape[-1]), float("nan"), dtype=source[0].dtype,
                         device=source[0].device)
        for lvl, per_level in enumerate(source):
            sel = (known & (level == lvl)).nonzero()[:, 0]
            rows = anchor[sel]
            over = (rows >= per_level.shape[1]).nonzero()[:, 0]
            if len(over):
                raise IndexError(f"scores_at: anchor {int(rows[over[0]])} (entry {int(sel[over[0]])}) "
                                 f"out of range for the {per_level.shape[1]} anchors of level {lvl}.")
            out[sel] = per_level[image][rows]
        bad = anchor < -1
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise IndexError(f"scores_at: anchor {int(anchor[j])} (entry {j}) is negative (-1 "
                             "means unknown).")
        # scores_of applied once to the (M, K) rows, as an elementwise map it may be.
        return out if self.scores is not None else self.scores_of(out)

    def _per_image(self, name: str) -> List[Any]:
        if self.selections is None:
            raise AttributeError(f"DenseRecord.{name}: the detector's per-image inference put no "
                                 "selection record.")
        return [getattr(s, name) for s in self.selections]

    candidates = property(lambda self: self._per_image("candidates"))
    candidate_level = property(lambda self: self._per_image("level"))
    candidate_anchor = property(lambda self: self._per_image("anchor_index"))
    nms_kept = property(lambda self: self._per_image("nms_kept"))
    det_candidate = property(lambda self: self._per_image("det_candidate"))
    score_thresh = property(lambda self: self.settings.values["score_thresh"])
    nms_thresh = property(lambda self: self.settings.values["nms_thresh"])
    topk = property(lambda self: self.settings.values["topk"])
    topk_candidates = property(lambda self: self.settings.values["topk_candidates"])

    def __repr__(self) -> str:
        cand = "" if self.selections is None else f", candidates={[len(c) for c in self.candidates]}"
        return (f"DenseRecord(levels={self.in_features}, anchors={[len(a) for a in self.anchors]}, "
                f"logits={[tuple(x.shape) for x in self.logits]}{cand}, "
                f"detections={[len(i) for i in self.instances]})")


class DenseDetector(PixelNormalizer, nn.Module):
    """Backbone + a head that makes per-location predictions on ``head_in_features``.

    ``forward`` in training mode (inside an ``EventStorage``) returns ``dict[str, Tensor]`` of
    losses; in eval mode ``list[dict]`` with ``"instances"`` per image, rescaled to each input's
    "height"/"width" when given.
    """

    # detectron2 keeps (backbone, head, head_in_features) positional here and subclasses call
    # ``super().__init__(backbone, head, head_in_features, pixel_mean=..., pixel_std=...)``;
    # the same signature is kept so that detectron2 subclasses port unchanged.
    def __init__(self, backbone: Backbone, head: nn.Module,
                 head_in_features: Optional[Sequence[str]] = None, *,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        """
        Args:
            head: called with the list of L feature maps, returns a list of outputs, each a list
                of L per-level tensors of shape (N, A*K, Hi, Wi).
            head_in_features: backbone features given to the head, in this order; None takes
                every backbone output, sorted by increasing stride.
            pixel_mean, pixel_std: per-channel normalisation, in the input's channel order. With
                MSRA / Detectron1 weights the std is folded into conv1, so std is 1.
        """
        super().__init__()
        self.backbone = backbone
        self.head = head
        if head_in_features is None:
            shapes = self.backbone.output_shape()
            self.head_in_features = sorted(shapes.keys(), key=lambda name: shapes[name].stride)
        else:
            missing = [f for f in head_in_features if f not in self.backbone.output_shape()]
            if missing:
                raise KeyError(
                    f"head_in_features {missing} are not backbone outputs "
                    f"(the backbone has {list(self.backbone.output_shape())})."
                )
            self.head_in_features = list(head_in_features)
        self._register_pixel_stats(pixel_mean, pixel_std)
        # Used by visualize_training; subclasses that know it set it from cfg.INPUT.FORMAT.
        self.input_format: Optional[str] = None
        self.vis_period = 0

    @perf.in_inference_precision  # in eval mode: the GPU precision switches (workbench.utils.perf)
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per image with "image" ((C, H, W), 0-255, in the input
                format's channel order), "instances" (ground truth, training only) and optionally
                "height"/"width" (output size at inference).
        """
        images = run_stage("preprocess", lambda: self.preprocess_image(batched_inputs), owner=self)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise KeyError("Training a dense detector needs an 'instances' key in every input dict.")
            # Checked before the backbone, whose BatchNorm statistics a failing step would move.
            gt_instances = gather_gt_instances(batched_inputs, self.device,
                                               num_classes=getattr(self, "num_classes", None))
        features = run_stage("backbone", lambda: self.backbone(images.tensor), owner=self)
        features = [features[f] for f in self.head_in_features]
        if self.training:
            predictions = self.head(features)
        else:
            predictions = run_stage("dense_head", lambda: self.head(features), owner=self)

        if self.training:
            storage = get_event_storage()
            losses = self.forward_training(images, features, predictions, gt_instances)
            if self.vis_period > 0 and storage.iter % self.vis_period == 0:
                with torch.no_grad():
                    detached = [[p.detach() for p in level_preds] for level_preds in predictions]
                    results = self.forward_inference(images, features, detached)
                self.visualize_training(batched_inputs, results)
            return losses

        results = self.forward_inference(images, features, predictions)
        return postprocess_per_image(results, batched_inputs, images.image_sizes)

    def forward_training(self, images: ImageList, features: List[Tensor],
                         predictions: List[List[Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, Tensor]:
        """Losses of one batch; ``predictions`` is the head's raw output."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_training.")

    def forward_inference(self, images: ImageList, features: List[Tensor],
                          predictions: List[List[Tensor]]) -> List[Instances]:
        """Per-image detections at the resized input resolution."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_inference.")

    def _transpose_dense_predictions(self, predictions: List[List[Tensor]],
                                     dims_per_anchor: List[int]) -> List[List[Tensor]]:
        """Transpose every per-level prediction from (N, A*K, Hi, Wi) to (N, Hi*Wi*A, K).

        Args:
            predictions: one entry per kind of output (e.g. [logits, deltas]), each a list of L
                per-level tensors.
            dims_per_anchor: K of each kind of output (number of classes, 4 for boxes).
        """
        if len(predictions) != len(dims_per_anchor):
            raise ValueError(
                f"Got {len(predictions)} kinds of predictions but {len(dims_per_anchor)} "
                "dims_per_anchor; give one K per kind."
            )
        return [[permute_to_N_HWA_K(x, k) for x in pred] for pred, k in zip(predictions, dims_per_anchor)]

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9) -> float:
        """Update the exponential moving average stored in attribute ``name`` and return it.

        Detectron1 divided dense losses by the batch's number of foreground anchors; with one or
        two images per GPU that number varies a lot, so an EMA of it is used instead:
        ``new = momentum * old + (1 - momentum) * value``, starting from ``initial_value``. The
        attribute is a plain float: it is not part of the state dict and persists across calls.
        """
        old = getattr(self, name) if hasattr(self, name) else initial_value
        new = old * momentum + value * (1 - momentum)
        setattr(self, name, new)
        return new

    def _test_settings(self) -> SelectionSettings:
        """The test-time selection settings, for a subclass that keeps them, as RetinaNet and
        FCOS do, in ``test_score_thresh``, ``test_nms_thresh``, ``max_detections_per_image`` and
        ``test_topk_candidates``."""
        return SelectionSettings(
            values={"score_thresh": self.test_score_thresh, "nms_thresh": self.test_nms_thresh,
                    "topk": self.max_detections_per_image,
                    "topk_candidates": self.test_topk_candidates},
            owner=self,
            attrs={"score_thresh": "test_score_thresh", "nms_thresh": "test_nms_thresh",
                   "topk": "max_detections_per_image", "topk_candidates": "test_topk_candidates"})

    def inference_single_image(self, anchors: List[Boxes], box_cls: List[Tensor],
                               box_delta: List[Tensor], image_size: Tuple[int, int]) -> Instances:
        """Detections of one image: per-level filtering and decoding, then class-wise NMS, with
        the test settings of :meth:`_test_settings` (RetinaNet and FCOS both select this way).

        Args:
            anchors: L levels of anchors (FCOS: points).
            box_cls: L tensors (Hi*Wi*A, K) of the scores to rank (RetinaNet: class
                probabilities; FCOS: sqrt(p_cls * p_ctr)).
            box_delta: L tensors (Hi*Wi*A, 4).
            image_size: (height, width) of the resized input image.
        """
        rec = active_recorder(self)
        mark = rec.mark() if rec is not None else 0
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        det = keep[: self.max_detections_per_image]
        if rec is not None:
            self._put_selection(rec, mark, len(anchors), pred, keep, det)
        return pred[det]

    def _put_dense_record(self, rec, mark: int, anchors: List[Boxes], logits: List[Tensor],
                          deltas: List[Tensor], results: List[Instances],
                          scores_of: Callable[[Tensor], Tensor], **more: Any) -> None:
        """Put the :class:`DenseRecord` of one batch into ``rec`` (a stage recorder), with the
        "dense_selection" records put since ``mark``; ``more``: DenseRecord's optional fields."""
        selections = rec.since(mark, "dense_selection")
        rec.put("dense", DenseRecord(
            in_features=list(self.head_in_features), anchors=anchors, logits=logits,
            deltas=deltas, head_features=rec.last("dense_head_features"),
            selections=selections if len(selections) == len(results) else None,
            instances=results, settings=self._test_settings(), scores_of=scores_of, **more))

    def _put_selection(self, rec, mark: int, num_levels: int, pred: Instances, keep: Tensor,
                       det: Tensor) -> None:
        """Put the :class:`DenseSelection` of one image into ``rec`` (a stage recorder).

        Args:
            mark: ``rec.mark()`` taken before the per-level decoding, whose
                "dense_level_anchors" records give each candidate's level and anchor row.
            num_levels: L.
            pred: the Ci candidates NMS ran on, levels concatenated in order.
            keep: indices of the candidates NMS kept, by decreasing score.
            det: the kept indices that became detections (``keep[:topk]``).
        """
        rows = rec.since(mark, "dense_level_anchors")  # one per level, in level order
        device = pred.scores.device
        if len(rows) == num_levels and sum(len(r) for r in rows) == len(pred):
            level = torch.cat([torch.full((len(r),), i, dtype=torch.int64, device=device)
                               for i, r in enumerate(rows)])
            anchor = torch.cat(rows)
        else:  # a custom decoding: unknown
            level = anchor = torch.full((len(pred),), -1, dtype=torch.int64, device=device)
        kept = torch.zeros(len(pred), dtype=torch.bool, device=device)
        kept[keep] = True
        rec.put("dense_selection", DenseSelection(pred, level, anchor, kept, det))

    def _decode_per_level_predictions(self, anchors: Boxes, pred_scores: Tensor, pred_deltas: Tensor,
                                      score_thresh: float, topk_candidates: int,
                                      image_size: Tuple[int, int]) -> Instances:
        """Keep the confident (anchor, class) pairs of one level and decode their boxes.

        Two filters make the later NMS cheap: scores strictly above ``score_thresh``, then the
        ``topk_candidates`` best of those (sorted by decreasing score).

        Args:
            anchors: the level's Hi*Wi*A anchors.
            pred_scores: (Hi*Wi*A, K) probabilities of one image.
            pred_deltas: (Hi*Wi*A, 4) box deltas of one image.

        Returns:
            ``Instances`` with "pred_boxes", "scores" and "pred_classes".
        """
        keep_idxs = pred_scores > score_thresh  # (Hi*Wi*A, K) bool
        topk_idxs = torch.nonzero(keep_idxs)  # (M, 2): (anchor index, class index), row-major
        # (M,): indexed by the pairs rather than by the mask again, the same values in the same
        # order without a second search (on a GPU, each waits for the device)
        pred_scores = pred_scores[topk_idxs[:, 0], topk_idxs[:, 1]]

        num_topk = min(topk_candidates, topk_idxs.shape[0])
        pred_scores, idxs = pred_scores.topk(num_topk)
        topk_idxs = topk_idxs[idxs]
        anchor_idxs, classes_idxs = topk_idxs.unbind(dim=1)

        put_record("dense_level_anchors", anchor_idxs, self)  # kept only under a stage recorder
        pred_boxes = self.box2box_transform.apply_deltas(
            pred_deltas[anchor_idxs], anchors.tensor[anchor_idxs]
        )
        return Instances(image_size, pred_boxes=Boxes(pred_boxes), scores=pred_scores,
                         pred_classes=classes_idxs)

    def _decode_multi_level_predictions(self, anchors: List[Boxes], pred_scores: List[Tensor],
                                        pred_deltas: List[Tensor], score_thresh: float,
                                        topk_candidates: int, image_size: Tuple[int, int]) -> Instances:
        """:meth:`_decode_per_level_predictions` on each of the L levels, concatenated."""
        predictions = [
            self._decode_per_level_predictions(anchors_i, scores_i, deltas_i, score_thresh,
                                               topk_candidates, image_size)
            for scores_i, deltas_i, anchors_i in zip(pred_scores, pred_deltas, anchors)
        ]
        return Instances.cat(predictions)

    def visualize_training(self, batched_inputs: List[Dict], results: List[Instances]) -> None:
        """Put one image into the storage: ground truth (green) over the top-20 detections (red).

        Args:
            results: ``forward_inference`` output, one ``Instances`` per input.
        """
        if len(batched_inputs) != len(results):
            raise ValueError(f"Cannot visualize {len(batched_inputs)} inputs with {len(results)} results.")
        storage = get_event_storage()
        max_boxes = 20
        inp = batched_inputs[0]  # only one image
        img = inp["image"].detach().cpu().permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
        if self.input_format == "BGR":
            img = img[:, :, ::-1]
        img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
        top, bottom = img.copy(), img.copy()
        _draw_box_outlines(top, inp["instances"].gt_boxes.tensor.cpu().numpy(), (0, 255, 0))
        processed = detector_postprocess(results[0], img.shape[0], img.shape[1])
        boxes = processed.pred_boxes.tensor.detach().cpu().numpy()[:max_boxes]
        _draw_box_outlines(bottom, boxes, (255, 0, 0))
        vis = np.concatenate((top, bottom), axis=0).transpose(2, 0, 1)  # (2H, W, 3) -> (3, 2H, W)
        storage.put_image(f"Top: GT bounding boxes; Bottom: {max_boxes} Highest Scoring Results", vis)
