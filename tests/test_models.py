import pytest
import torch

from twostream.learn.models import build_model, cross_modality_conv


def test_shapes_rgb_and_flow():
    rgb = build_model("resnet18", num_classes=7, in_channels=3)
    flow = build_model("resnet18", num_classes=7, in_channels=4)
    assert rgb(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    assert flow(torch.zeros(2, 4, 64, 64)).shape == (2, 7)
    assert flow.conv1.weight.shape == (64, 4, 7, 7)


def test_head_is_two_fc_with_relu_and_dropout():
    model = build_model("resnet18", num_classes=5, hidden=32, dropout=0.5)
    kinds = [type(m).__name__ for m in model.fc]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.fc[0].in_features == 512 and model.fc[0].out_features == 32
    assert model.fc[2].p == 0.5 and model.fc[3].out_features == 5


def test_cross_modality_init_is_mean_of_rgb_repeated():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, bias=False)
    new = cross_modality_conv(conv, 6)
    expected = conv.weight.mean(dim=1)  # (8, 3, 3)
    for c in range(6):
        torch.testing.assert_close(new.weight[:, c], expected, rtol=0, atol=0)
    # a constant input gives the same response as 2L/3 times the rgb conv's on the mean
    x = torch.ones(1, 6, 5, 5)
    torch.testing.assert_close(new(x), conv(torch.ones(1, 3, 5, 5)) * 2, rtol=1e-5, atol=1e-5)


def test_local_pth_weights_are_loaded(tmp_path):
    src = build_model("resnet18", num_classes=3)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = build_model("resnet18", num_classes=3, in_channels=4, pretrained=str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    torch.testing.assert_close(model.conv1.weight[:, 0], src.conv1.weight.mean(dim=1))


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="resnet18, resnet50; got 'vgg'"):
        build_model("vgg", num_classes=3)
    with pytest.raises(FileNotFoundError, match="none, imagenet or a path"):
        build_model("resnet18", num_classes=3, pretrained="missing.pth")


def test_from_scratch_flow_channels_start_different():
    torch.manual_seed(0)
    weight = build_model("resnet18", num_classes=3, in_channels=4).conv1.weight  # (64, 4, 7, 7)
    for c in range(1, 4):  # cross-modality init would make every channel the same kernel
        assert not torch.equal(weight[:, 0], weight[:, c])
    assert 0.5 < float(weight.detach().std()) / (2 / (64 * 49)) ** 0.5 < 1.5  # kaiming fan_out, as torchvision's conv1


def test_partial_bn_freezes_every_batchnorm_but_the_first():
    from twostream.learn.models import batchnorms, freeze_partial_bn, partial_bn_mode

    model = build_model("resnet18", num_classes=3)
    bns = batchnorms(model)
    assert bns[0] is model.bn1 and len(bns) == 20
    assert freeze_partial_bn(model) == 19
    assert all(p.requires_grad for p in model.bn1.parameters())
    assert not any(p.requires_grad for m in bns[1:] for p in m.parameters())
    model.train()
    partial_bn_mode(model)
    assert model.bn1.training and not any(m.training for m in bns[1:]) and model.layer1[0].conv1.training
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(before[0], bns[0].running_mean)  # the first still learns its statistics
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before[1:], bns[1:]))


def test_ddp_on_gpus_synchronises_batchnorm_and_cpu_ranks_keep_their_own():
    from twostream.runtime.config import TrainConfig
    from twostream.learn.engine import prepare_batchnorm
    from twostream.learn.scoring import Dist

    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, warmup_epochs=0.0,
                      label_smoothing=0.0, batch_size=8, crop=32, sampling="clip", segments=3, augment="crop",
                      partial_bn=False, workers=0, threads=1)

    def kinds(dist: Dist) -> set[str]:
        model = prepare_batchnorm(build_model("resnet18", num_classes=3), cfg, dist)
        return {type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__}

    assert kinds(Dist(0, 2, torch.device("cuda", 0))) == {"SyncBatchNorm"}  # converting needs no GPU
    assert kinds(Dist(0, 1, torch.device("cuda", 0))) == {"BatchNorm2d"}
    assert kinds(Dist(0, 2, torch.device("cpu"))) == {"BatchNorm2d"}  # PyTorch's SyncBatchNorm is GPU-only
