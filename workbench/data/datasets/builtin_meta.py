"""Metadata of the datasets detectron2 knows by name (COCO, COCO panoptic, COCO person
keypoints, LVIS, Cityscapes, ADE20K): class names, dataset ids, colours, keypoints.

These let a user show or evaluate a model trained on one of these datasets without having its
annotation files. Datasets of your own need nothing here: :func:`load_coco_json` fills their
metadata from the json.

The tables are facts about the datasets (the same values as detectron2's ``builtin_meta.py``);
``COCO_CATEGORIES`` / ``CITYSCAPES_CATEGORIES`` are lists of dicts as in detectron2.
"""

from __future__ import annotations

from typing import Any, Dict, List

__all__ = [
    "ADE20K_SEM_SEG_CATEGORIES", "CITYSCAPES_CATEGORIES", "COCO_CATEGORIES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP", "COCO_PERSON_KEYPOINT_NAMES", "KEYPOINT_CONNECTION_RULES",
]

# COCO panoptic's 133 categories, (id, isthing, name, colour RGB): the 80 things first (their
# ids are the instance json's), then the 53 stuff classes.
_COCO_TABLE = (
    (1, 1, 'person', (220, 20, 60)),
    (2, 1, 'bicycle', (119, 11, 32)),
    (3, 1, 'car', (0, 0, 142)),
    (4, 1, 'motorcycle', (0, 0, 230)),
    (5, 1, 'airplane', (106, 0, 228)),
    (6, 1, 'bus', (0, 60, 100)),
    (7, 1, 'train', (0, 80, 100)),
    (8, 1, 'truck', (0, 0, 70)),
    (9, 1, 'boat', (0, 0, 192)),
    (10, 1, 'traffic light', (250, 170, 30)),
    (11, 1, 'fire hydrant', (100, 170, 30)),
    (13, 1, 'stop sign', (220, 220, 0)),
    (14, 1, 'parking meter', (175, 116, 175)),
    (15, 1, 'bench', (250, 0, 30)),
    (16, 1, 'bird', (165, 42, 42)),
    (17, 1, 'cat', (255, 77, 255)),
    (18, 1, 'dog', (0, 226, 252)),
    (19, 1, 'horse', (182, 182, 255)),
    (20, 1, 'sheep', (0, 82, 0)),
    (21, 1, 'cow', (120, 166, 157)),
    (22, 1, 'elephant', (110, 76, 0)),
    (23, 1, 'bear', (174, 57, 255)),
    (24, 1, 'zebra', (199, 100, 0)),
    (25, 1, 'giraffe', (72, 0, 118)),
    (27, 1, 'backpack', (255, 179, 240)),
    (28, 1, 'umbrella', (0, 125, 92)),
    (31, 1, 'handbag', (209, 0, 151)),
    (32, 1, 'tie', (188, 208, 182)),
    (33, 1, 'suitcase', (0, 220, 176)),
    (34, 1, 'frisbee', (255, 99, 164)),
    (35, 1, 'skis', (92, 0, 73)),
    (36, 1, 'snowboard', (133, 129, 255)),
    (37, 1, 'sports ball', (78, 180, 255)),
    (38, 1, 'kite', (0, 228, 0)),
    (39, 1, 'baseball bat', (174, 255, 243)),
    (40, 1, 'baseball glove', (45, 89, 255)),
    (41, 1, 'skateboard', (134, 134, 103)),
    (42, 1, 'surfboard', (145, 148, 174)),
    (43, 1, 'tennis racket', (255, 208, 186)),
    (44, 1, 'bottle', (197, 226, 255)),
    (46, 1, 'wine glass', (171, 134, 1)),
    (47, 1, 'cup', (109, 63, 54)),
    (48, 1, 'fork', (207, 138, 255)),
    (49, 1, 'knife', (151, 0, 95)),
    (50, 1, 'spoon', (9, 80, 61)),
    (51, 1, 'bowl', (84, 105, 51)),
    (52, 1, 'banana', (74, 65, 105)),
    (53, 1, 'apple', (166, 196, 102)),
    (54, 1, 'sandwich', (208, 195, 210)),
    (55, 1, 'orange', (255, 109, 65)),
    (56, 1, 'broccoli', (0, 143, 149)),
    (57, 1, 'carrot', (179, 0, 194)),
    (58, 1, 'hot dog', (209, 99, 106)),
    (59, 1, 'pizza', (5, 121, 0)),
    (60, 1, 'donut', (227, 255, 205)),
    (61, 1, 'cake', (147, 186, 208)),
    (62, 1, 'chair', (153, 69, 1)),
    (63, 1, 'couch', (3, 95, 161)),
    (64, 1, 'potted plant', (163, 255, 0)),
    (65, 1, 'bed', (119, 0, 170)),
    (67, 1, 'dining table', (0, 182, 199)),
    (70, 1, 'toilet', (0, 165, 120)),
    (72, 1, 'tv', (183, 130, 88)),
    (73, 1, 'laptop', (95, 32, 0)),
    (74, 1, 'mouse', (130, 114, 135)),
    (75, 1, 'remote', (110, 129, 133)),
    (76, 1, 'keyboard', (166, 74, 118)),
    (77, 1, 'cell phone', (219, 142, 185)),
    (78, 1, 'microwave', (79, 210, 114)),
    (79, 1, 'oven', (178, 90, 62)),
    (80, 1, 'toaster', (65, 70, 15)),
    (81, 1, 'sink', (127, 167, 115)),
    (82, 1, 'refrigerator', (59, 105, 106)),
    (84, 1, 'book', (142, 108, 45)),
    (85, 1, 'clock', (196, 172, 0)),
    (86, 1, 'vase', (95, 54, 80)),
    (87, 1, 'scissors', (128, 76, 255)),
    (88, 1, 'teddy bear', (201, 57, 1)),
    (89, 1, 'hair drier', (246, 0, 122)),
    (90, 1, 'toothbrush', (191, 162, 208)),
    (92, 0, 'banner', (255, 255, 128)),
    (93, 0, 'blanket', (147, 211, 203)),
    (95, 0, 'bridge', (150, 100, 100)),
    (100, 0, 'cardboard', (168, 171, 172)),
    (107, 0, 'counter', (146, 112, 198)),
    (109, 0, 'curtain', (210, 170, 100)),
    (112, 0, 'door-stuff', (92, 136, 89)),
    (118, 0, 'floor-wood', (218, 88, 184)),
    (119, 0, 'flower', (241, 129, 0)),
    (122, 0, 'fruit', (217, 17, 255)),
    (125, 0, 'gravel', (124, 74, 181)),
    (128, 0, 'house', (70, 70, 70)),
    (130, 0, 'light', (255, 228, 255)),
    (133, 0, 'mirror-stuff', (154, 208, 0)),
    (138, 0, 'net', (193, 0, 92)),
    (141, 0, 'pillow', (76, 91, 113)),
    (144, 0, 'platform', (255, 180, 195)),
    (145, 0, 'playingfield', (106, 154, 176)),
    (147, 0, 'railroad', (230, 150, 140)),
    (148, 0, 'river', (60, 143, 255)),
    (149, 0, 'road', (128, 64, 128)),
    (151, 0, 'roof', (92, 82, 55)),
    (154, 0, 'sand', (254, 212, 124)),
    (155, 0, 'sea', (73, 77, 174)),
    (156, 0, 'shelf', (255, 160, 98)),
    (159, 0, 'snow', (255, 255, 255)),
    (161, 0, 'stairs', (104, 84, 109)),
    (166, 0, 'tent', (169, 164, 131)),
    (168, 0, 'towel', (225, 199, 255)),
    (171, 0, 'wall-brick', (137, 54, 74)),
    (175, 0, 'wall-stone', (135, 158, 223)),
    (176, 0, 'wall-tile', (7, 246, 231)),
    (177, 0, 'wall-wood', (107, 255, 200)),
    (178, 0, 'water-other', (58, 41, 149)),
    (180, 0, 'window-blind', (183, 121, 142)),
    (181, 0, 'window-other', (255, 73, 97)),
    (184, 0, 'tree-merged', (107, 142, 35)),
    (185, 0, 'fence-merged', (190, 153, 153)),
    (186, 0, 'ceiling-merged', (146, 139, 141)),
    (187, 0, 'sky-other-merged', (70, 130, 180)),
    (188, 0, 'cabinet-merged', (134, 199, 156)),
    (189, 0, 'table-merged', (209, 226, 140)),
    (190, 0, 'floor-other-merged', (96, 36, 108)),
    (191, 0, 'pavement-merged', (96, 96, 96)),
    (192, 0, 'mountain-merged', (64, 170, 64)),
    (193, 0, 'grass-merged', (152, 251, 152)),
    (194, 0, 'dirt-merged', (208, 229, 228)),
    (195, 0, 'paper-merged', (206, 186, 171)),
    (196, 0, 'food-other-merged', (152, 161, 64)),
    (197, 0, 'building-other-merged', (116, 112, 0)),
    (198, 0, 'rock-merged', (0, 114, 143)),
    (199, 0, 'wall-other-merged', (102, 102, 156)),
    (200, 0, 'rug-merged', (250, 141, 255)),
)

COCO_CATEGORIES: List[Dict[str, Any]] = [
    {"color": list(color), "isthing": isthing, "id": id_, "name": name}
    for id_, isthing, name, color in _COCO_TABLE
]

COCO_PERSON_KEYPOINT_NAMES = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)

# Pairs of keypoints that swap under a horizontal flip.
COCO_PERSON_KEYPOINT_FLIP_MAP = tuple(
    (f"left_{part}", f"right_{part}")
    for part in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
)

# Skeleton drawn by the visualizer: (keypoint, keypoint, RGB colour).
KEYPOINT_CONNECTION_RULES = [
    ('left_ear', 'left_eye', (102, 204, 255)),
    ('right_ear', 'right_eye', (51, 153, 255)),
    ('left_eye', 'nose', (102, 0, 204)),
    ('nose', 'right_eye', (51, 102, 255)),
    ('left_shoulder', 'right_shoulder', (255, 128, 0)),
    ('left_shoulder', 'left_elbow', (153, 255, 204)),
    ('right_shoulder', 'right_elbow', (128, 229, 255)),
    ('left_elbow', 'left_wrist', (153, 255, 153)),
    ('right_elbow', 'right_wrist', (102, 255, 224)),
    ('left_hip', 'right_hip', (255, 102, 0)),
    ('left_hip', 'left_knee', (255, 255, 77)),
    ('right_hip', 'right_knee', (153, 255, 204)),
    ('left_knee', 'left_ankle', (191, 255, 128)),
    ('right_knee', 'right_ankle', (255, 195, 77)),
]

# Cityscapes' 19 evaluated classes, (id, trainId, isthing, name, colour RGB).
_CITYSCAPES_TABLE = (
    (7, 0, 0, 'road', (128, 64, 128)),
    (8, 1, 0, 'sidewalk', (244, 35, 232)),
    (11, 2, 0, 'building', (70, 70, 70)),
    (12, 3, 0, 'wall', (102, 102, 156)),
    (13, 4, 0, 'fence', (190, 153, 153)),
    (17, 5, 0, 'pole', (153, 153, 153)),
    (19, 6, 0, 'traffic light', (250, 170, 30)),
    (20, 7, 0, 'traffic sign', (220, 220, 0)),
    (21, 8, 0, 'vegetation', (107, 142, 35)),
    (22, 9, 0, 'terrain', (152, 251, 152)),
    (23, 10, 0, 'sky', (70, 130, 180)),
    (24, 11, 1, 'person', (220, 20, 60)),
    (25, 12, 1, 'rider', (255, 0, 0)),
    (26, 13, 1, 'car', (0, 0, 142)),
    (27, 14, 1, 'truck', (0, 0, 70)),
    (28, 15, 1, 'bus', (0, 60, 100)),
    (31, 16, 1, 'train', (0, 80, 100)),
    (32, 17, 1, 'motorcycle', (0, 0, 230)),
    (33, 18, 1, 'bicycle', (119, 11, 32)),
)

CITYSCAPES_CATEGORIES: List[Dict[str, Any]] = [
    {"color": color, "isthing": isthing, "id": id_, "trainId": train_id, "name": name}
    for id_, train_id, isthing, name, color in _CITYSCAPES_TABLE
]

# ADE20K (SceneParsing, 150 classes), in label order.
ADE20K_SEM_SEG_CATEGORIES = [
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road, route', 'bed', 'window ',
    'grass', 'cabinet', 'sidewalk, pavement', 'person', 'earth, ground', 'door', 'table',
    'mountain, mount', 'plant', 'curtain', 'chair', 'car', 'water', 'painting, picture', 'sofa',
    'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock, stone', 'wardrobe, closet, press', 'lamp', 'tub', 'rail', 'cushion',
    'base, pedestal, stand', 'box', 'column, pillar', 'signboard, sign',
    'chest of drawers, chest, bureau, dresser', 'counter', 'sand', 'sink', 'skyscraper',
    'fireplace', 'refrigerator, icebox', 'grandstand, covered stand', 'path', 'stairs', 'runway',
    'case, display case, showcase, vitrine', 'pool table, billiard table, snooker table',
    'pillow', 'screen door, screen', 'stairway, staircase', 'river', 'bridge, span', 'bookcase',
    'blind, screen', 'coffee table', 'toilet, can, commode, crapper, pot, potty, stool, throne',
    'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm, palm tree', 'kitchen island',
    'computer', 'swivel chair', 'boat', 'bar', 'arcade machine',
    'hovel, hut, hutch, shack, shanty', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier',
    'awning, sunshade, sunblind', 'street lamp', 'booth', 'tv', 'plane', 'dirt track', 'clothes',
    'pole', 'land, ground, soil', 'bannister, banister, balustrade, balusters, handrail',
    'escalator, moving staircase, moving stairway', 'ottoman, pouf, pouffe, puff, hassock',
    'bottle', 'buffet, counter, sideboard', 'poster, posting, placard, notice, bill, card',
    'stage', 'van', 'ship', 'fountain',
    'conveyer belt, conveyor belt, conveyer, conveyor, transporter', 'canopy',
    'washer, automatic washer, washing machine', 'plaything, toy', 'pool', 'stool',
    'barrel, cask', 'basket, handbasket', 'falls', 'tent', 'bag', 'minibike, motorbike', 'cradle',
    'oven', 'ball', 'food, solid food', 'step, stair', 'tank, storage tank', 'trade name',
    'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket, cover',
    'sculpture', 'hood, exhaust hood', 'sconce', 'vase', 'traffic light', 'tray', 'trash can',
    'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator',
    'glass, drinking glass', 'clock', 'flag',
]


def _get_coco_instances_meta() -> Dict[str, Any]:
    """The 80 COCO thing classes: names, colours and json id -> contiguous id."""
    things = [k for k in COCO_CATEGORIES if k["isthing"] == 1]
    if len(things) != 80:
        raise AssertionError(f"COCO has 80 thing classes, the table has {len(things)}.")
    return {
        "thing_dataset_id_to_contiguous_id": {k["id"]: i for i, k in enumerate(things)},
        "thing_classes": [k["name"] for k in things],
        "thing_colors": [k["color"] for k in things],
    }


def _get_coco_panoptic_separated_meta() -> Dict[str, Any]:
    """COCO panoptic for Panoptic FPN: the 80 things as instances, and a semantic map of
    "things" (label 0, all thing classes merged) plus the 53 stuff classes (labels 1..53)."""
    stuff = [k for k in COCO_CATEGORIES if k["isthing"] == 0]
    if len(stuff) != 53:
        raise AssertionError(f"COCO panoptic has 53 stuff classes, the table has {len(stuff)}.")
    stuff_dataset_id_to_contiguous_id = {k["id"]: i + 1 for i, k in enumerate(stuff)}
    stuff_dataset_id_to_contiguous_id[0] = 0
    meta = {
        "stuff_dataset_id_to_contiguous_id": stuff_dataset_id_to_contiguous_id,
        "stuff_classes": ["things"] + [k["name"].replace("-other", "").replace("-merged", "") for k in stuff],
        "stuff_colors": [[82, 18, 128]] + [k["color"] for k in stuff],
    }
    meta.update(_get_coco_instances_meta())
    return meta


def _get_coco_panoptic_standard_meta() -> Dict[str, Any]:
    """COCO panoptic for Panoptic-DeepLab / MaskFormer: all 133 categories are both
    ``thing_classes`` and ``stuff_classes``, with one contiguous id space."""
    thing_map, stuff_map = {}, {}
    for i, cat in enumerate(COCO_CATEGORIES):
        (thing_map if cat["isthing"] else stuff_map)[cat["id"]] = i
    return {
        "thing_classes": [k["name"] for k in COCO_CATEGORIES],
        "thing_colors": [k["color"] for k in COCO_CATEGORIES],
        "stuff_classes": [k["name"] for k in COCO_CATEGORIES],
        "stuff_colors": [k["color"] for k in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": thing_map,
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def _get_builtin_metadata(dataset_name: str) -> Dict[str, Any]:
    """Metadata of a dataset family: "coco", "coco_panoptic_separated",
    "coco_panoptic_standard", "coco_person" or "cityscapes"."""
    if dataset_name == "coco":
        return _get_coco_instances_meta()
    if dataset_name == "coco_panoptic_separated":
        return _get_coco_panoptic_separated_meta()
    if dataset_name == "coco_panoptic_standard":
        return _get_coco_panoptic_standard_meta()
    if dataset_name == "coco_person":
        return {
            "thing_classes": ["person"],
            "keypoint_names": COCO_PERSON_KEYPOINT_NAMES,
            "keypoint_flip_map": COCO_PERSON_KEYPOINT_FLIP_MAP,
            "keypoint_connection_rules": KEYPOINT_CONNECTION_RULES,
        }
    if dataset_name == "cityscapes":
        return {
            "thing_classes": ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"],
            "stuff_classes": [k["name"] for k in CITYSCAPES_CATEGORIES],
        }
    raise KeyError(f"No built-in metadata for dataset {dataset_name!r}.")
