"""The cfg parser builds the stock YOLOv3 cfgs and fails loudly, naming file and line."""

from __future__ import annotations

import pytest
import torch

from engine.cfg import CfgError, RouteSpec, ShortcutSpec, layer_shapes, parse_cfg, parse_cfg_text
from engine.model import Darknet

NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"
HEAD = ("[convolutional]\nfilters=18\nsize=1\nstride=1\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n")


def head_sizes(spec) -> list[tuple[int, int]]:
    shapes = layer_shapes(spec)
    return [shapes[i - 1][1:] for i, layer in enumerate(spec.layers)
            if type(layer).__name__ == "YoloSpec"]


@pytest.mark.parametrize(("name", "heads"), [
    ("yolov3-tiny.cfg", [(13, 13), (26, 26)]),
    ("yolov3.cfg", [(13, 13), (26, 26), (52, 52)]),
    ("yolov3-spp.cfg", [(19, 19), (38, 38), (76, 76)]),  # 608 x 608 in the file
])
def test_it_builds_the_stock_cfgs(darknet_dir, name, heads):
    spec = parse_cfg(darknet_dir / name)
    assert spec.classes == 80
    assert head_sizes(spec) == heads


def test_the_built_network_outputs_one_tensor_per_head(darknet_dir):
    spec = parse_cfg(darknet_dir / "yolov3.cfg", input_size=320)
    network = Darknet(spec).eval()
    with torch.inference_mode():
        outputs = network(torch.zeros(2, 3, 320, 320))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 10, 10, 85), (2, 3, 20, 20, 85),
                                                 (2, 3, 40, 40, 85)]


def test_input_size_overrides_the_cfg(darknet_dir):
    spec = parse_cfg(darknet_dir / "yolov3-tiny.cfg", input_size=(640, 320))
    assert (spec.width, spec.height) == (640, 320)
    assert head_sizes(spec) == [(10, 20), (20, 40)]


@pytest.mark.parametrize("size", [300, 0, -32, (416, 100)])
def test_input_size_must_be_a_multiple_of_32(darknet_dir, size):
    with pytest.raises(CfgError, match="multiple of 32"):
        parse_cfg(darknet_dir / "yolov3-tiny.cfg", input_size=size)


def test_an_unknown_section_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "\n[dropout]\nprobability=.5\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:6: unknown section \[dropout\]"):
        parse_cfg(path)


def test_an_unknown_key_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=8\nsize=3\ndilation=2\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:8: unknown key 'dilation' in \[convolutional\]"):
        parse_cfg(path)


def test_an_unsupported_activation_is_an_error(tmp_path):
    # darknet itself would go on with ReLU ("Couldn't find activation function").
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=8\nactivation=softsign\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:7: unsupported activation 'softsign'"):
        parse_cfg(path)


def test_a_bad_value_is_an_error_naming_its_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=eight\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:6: bad value for 'filters'"):
        parse_cfg(path)


def test_route_takes_negative_and_absolute_indices():
    text = (NET + "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  # 0
            "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=leaky\n"  # 1
            "[route]\nlayers=-1,0\n"  # 2: 6 + 4 channels
            + HEAD)
    spec = parse_cfg_text(text)
    route = spec.layers[2]
    assert isinstance(route, RouteSpec) and route.sources == (1, 0)
    assert layer_shapes(spec)[2] == (10, 64, 64)


def test_a_route_to_a_later_layer_is_an_error():
    text = NET + "[route]\nlayers=3\n" + HEAD
    with pytest.raises(CfgError, match=r"<cfg>:6: 'layers' refers to layer 3"):
        parse_cfg_text(text)


def test_a_shortcut_between_different_sizes_is_an_error():
    # Different channel counts are fine (darknet adds the channels both have), sizes not.
    text = (NET + "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\n"
            "[convolutional]\nfilters=8\nsize=1\nstride=2\nactivation=leaky\n"
            "[shortcut]\nfrom=-2\nactivation=linear\n" + HEAD)
    with pytest.raises(CfgError, match=r"<cfg>:14: shortcut adds a \(4, 64, 64\) output to a "
                                       r"\(8, 32, 32\) one"):
        parse_cfg_text(text)


def test_a_yolo_layer_must_get_the_channels_its_anchors_need():
    text = NET + HEAD.replace("filters=18", "filters=17")
    with pytest.raises(CfgError, match=r"\[yolo\] with 3 anchors and 1 classes needs 18"):
        parse_cfg_text(text)


# --- the maintained fork's cfgs (AlexeyAB/darknet) -----------------------------------

@pytest.mark.parametrize(("name", "heads", "letter_box", "nms"), [
    ("yolov3-tiny-prn.cfg", [(13, 13), (26, 26)], True, ("default", 0.6)),
    ("yolov4-tiny.cfg", [(13, 13), (26, 26)], False, ("greedynms", 0.6)),
    ("yolov4-tiny-3l.cfg", [(19, 19), (38, 38), (76, 76)], False, ("greedynms", 0.6)),
    ("yolov4.cfg", [(76, 76), (38, 38), (19, 19)], False, ("greedynms", 0.6)),
    ("yolov4-csp.cfg", [(64, 64), (32, 32), (16, 16)], True, ("diounms", 0.6)),
    ("yolov7-tiny.cfg", [(52, 52), (26, 26), (13, 13)], False, ("diounms", 0.6)),
    ("yolov7.cfg", [(80, 80), (40, 40), (20, 20)], False, ("diounms", 0.6)),
])
def test_it_builds_the_forks_cfgs(darknet_dir, name, heads, letter_box, nms):
    spec = parse_cfg(darknet_dir / "alexeyab" / name)
    assert spec.classes == 80
    assert head_sizes(spec) == heads
    # yolov4-csp says letter_box=1; the others stretch, the fork's default, except
    # yolov3-tiny-prn, which uses nothing pjreddie's darknet lacks.
    assert (spec.letter_box, spec.fork) == (letter_box, name != "yolov3-tiny-prn.cfg")
    assert spec.nms == nms


@pytest.mark.parametrize("name", ["yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg"])
def test_pjreddies_cfgs_are_letterboxed(darknet_dir, name):
    spec = parse_cfg(darknet_dir / name)
    assert spec.letter_box and not spec.fork


MISH_CONV = "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=mish\n"


@pytest.mark.parametrize(("net", "layers", "letter_box"), [
    ("", "", True),  # pjreddie's keys only: letterboxed, as pjreddie's darknet does
    ("letter_box=0\n", "", False),
    ("", MISH_CONV, False),  # written for the fork: stretched, the fork's default
    ("letter_box=1\n", MISH_CONV, True),
])
def test_the_resize_follows_the_cfg(net, layers, letter_box):
    spec = parse_cfg_text(NET + net + layers + HEAD)
    assert spec.letter_box is letter_box


def test_route_groups_take_a_slice_of_each_input():
    text = (NET + "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=mish\n"  # 0
            "[convolutional]\nfilters=4\nsize=1\nactivation=swish\n"  # 1
            "[route]\nlayers=0,1\ngroups=2\ngroup_id=1\n"  # 2: 4 + 2 channels
            + HEAD)
    spec = parse_cfg_text(text)
    route = spec.layers[2]
    assert isinstance(route, RouteSpec) and (route.groups, route.group_id) == (2, 1)
    assert layer_shapes(spec)[2] == (6, 64, 64)


@pytest.mark.parametrize(("options", "message"), [
    ("groups=3\ngroup_id=0\n", r"<cfg>:14: groups=3 does not divide the 8 channels"),
    ("groups=2\ngroup_id=2\n", r"<cfg>:16: route needs groups >= 1 and 0 <= group_id < groups"),
])
def test_a_route_group_that_does_not_fit_is_an_error(options, message):
    text = (NET + "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=mish\n"
            "[convolutional]\nfilters=4\nsize=1\nactivation=swish\n"
            "[route]\nlayers=0\n" + options + HEAD)
    with pytest.raises(CfgError, match=message):
        parse_cfg_text(text)


def test_yolo_keys_of_the_fork_are_read_and_training_ones_ignored():
    head = HEAD + ("scale_x_y = 1.05\nnew_coords=1\nnms_kind=diounms\nbeta_nms=0.8\n"
                   "iou_thresh=0.213\ncls_normalizer=1.0\niou_normalizer=0.07\niou_loss=ciou\n"
                   "max_delta=5\ncounters_per_class=100\nlabel_smooth_eps=0.1\n"
                   "obj_normalizer=1.0\nresize=1.5\nobjectness_smooth=1\n")
    yolo = parse_cfg_text(NET + head).layers[-1]
    assert (yolo.scale_x_y, yolo.new_coords, yolo.nms_kind, yolo.beta_nms) == (1.05, True,
                                                                                "diounms", 0.8)


@pytest.mark.parametrize(("text", "message"), [
    (NET + HEAD + "nms_kind=softnms\n",
     r"<cfg>:15: unsupported nms_kind 'softnms' \(supported: default, diounms, greedynms\)"),
    (NET + HEAD + "embedding_layer=-2\n", r"<cfg>:15: unknown key 'embedding_layer' in \[yolo\]"),
    (NET + MISH_CONV + "[shortcut]\nfrom=-1\nactivation=hard_mish\n" + HEAD,
     r"<cfg>:12: darknet's \[shortcut\] cannot apply activation 'hard_mish'"),
    (NET + MISH_CONV + "[shortcut]\nfrom=-1\nweights_type=per_channel\n" + HEAD,
     r"<cfg>:12: weighted shortcuts \(weights_type=per_channel\) are not supported"),
    (NET + "[maxpool]\nsize=2\nstride=1\nmaxpool_depth=1\n" + HEAD,
     r"<cfg>:8: unknown key 'maxpool_depth' in \[maxpool\]"),
])
def test_what_the_fork_has_and_the_engine_does_not_is_an_error_naming_the_line(text, message):
    with pytest.raises(CfgError, match=message):
        parse_cfg_text(text)


def test_a_shortcut_may_add_several_layers():
    text = (NET + MISH_CONV + MISH_CONV + MISH_CONV + "[shortcut]\nfrom=-1,-3\n" + HEAD)
    shortcut = parse_cfg_text(text).layers[3]
    assert isinstance(shortcut, ShortcutSpec) and shortcut.sources == (2, 0)
