"""Tests of lightning_modules/classification.py and the CompConv experiment configs.

Budget: under 30 s on 2 CPU cores (tiny CompConv ResNet-18 at 16 x 16 on the embedded digits).
"""

import csv
import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.loggers import CSVLogger

from datamodules.classification import ClassificationDataModule
from lightning_modules.classification import ImageClassifier
from networks.classification_nets import ResNet
from networks.compconv import CompConv2d, convert_model

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (severe on a shared 2-core machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


class _LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _module(lr=0.05, scheduler=None, interval="epoch"):
    net = convert_model(ResNet(18, 10, width=8, small_input=True), c0=16)
    opt = functools.partial(torch.optim.SGD, lr=lr, momentum=0.9)
    return ImageClassifier(net, opt, 10, scheduler, interval, example_input_size=(3, 16, 16))


def _trainer(tmp_path, **kw):
    args = dict(
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        logger=False,
    )
    args.update(kw)
    return pl.Trainer(default_root_dir=tmp_path, **args)


def test_compconv_resnet_trains_on_embedded_digits(tmp_path):
    pl.seed_everything(0)
    model = _module()
    assert any(isinstance(m, CompConv2d) and m.depth == 3 for m in model.net.modules())
    dm = ClassificationDataModule("digits", batch_size=32, image_size=16, augment=False)
    rec = _LossRecorder()
    logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = _trainer(tmp_path, max_steps=20, limit_val_batches=2, val_check_interval=20, callbacks=[rec],
                       logger=logger, log_every_n_steps=5)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert len(rec.losses) == 20
    assert rec.losses[0] == pytest.approx(2.3, abs=0.3)  # ln(10): chance level at start
    assert last < 0.75 * first, rec.losses
    m = trainer.callback_metrics
    assert 0.0 <= float(m["val/acc_top1"]) <= float(m["val/acc_top5"]) <= 1.0
    assert float(m["train/acc_top1"]) > 0.2  # chance is 0.1
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    gmacs = [float(r["model/GMACs"]) for r in rows if r.get("model/GMACs")]
    assert len(gmacs) == 1 and 0 < gmacs[0] < 0.01


def test_top1_top5_are_exact_on_known_logits(tmp_path):
    """torchmetrics top-k on a constant-logit network: class 3 ranked first, then 1, 7, 0, 5."""

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([5.0, 8.0, 0, 9.0, 0, 4.0, 0, 7.0, 0, 0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], -1)

    model = ImageClassifier(Fixed(), functools.partial(torch.optim.SGD, lr=0.0), 10)
    x = torch.zeros(8, 3, 4, 4)
    y = torch.tensor([3, 1, 5, 2, 2, 2, 2, 2])  # top-1 hits 1/8, top-5 hits 3/8
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    out = _trainer(tmp_path).validate(model, loader, verbose=False)[0]
    assert out["val/acc_top1"] == pytest.approx(1 / 8)
    assert out["val/acc_top5"] == pytest.approx(3 / 8)


def test_scheduler_partial_and_interval(tmp_path):
    sched = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4)
    model = _module(lr=0.1, scheduler=sched, interval="step")
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=ClassificationDataModule("digits", batch_size=16, image_size=16))
    opt = trainer.optimizers[0]
    # cosine after 2 of 4 steps: 0.1 * (1 + cos(pi / 2)) / 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    # the checkpoint holds no partials, so it loads without executing code (and a run can resume from it)
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    state = torch.load(tmp_path / "step2.ckpt", weights_only=True)
    assert state["hyper_parameters"]["scheduler_interval"] == "step" and "optimizer" not in state["hyper_parameters"]
    with pytest.raises(ValueError, match="scheduler_interval"):
        _module(interval="batch")


@pytest.mark.parametrize("experiment", ["compconv_demo", "compconv_cifar10", "compconv_imagenet_r50"])
def test_experiment_configs_compose_and_instantiate(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    assert cfg.data.batch_size > 0 and cfg.model.scheduler.T_max == cfg.trainer.max_epochs
    model = instantiate(cfg.model, _convert_="partial")
    assert isinstance(model, ImageClassifier)
    replaced = model.net.compconv_replaced
    assert "stem" not in replaced and all(isinstance(model.net.get_submodule(n), CompConv2d) for n in replaced)
    size = cfg.data.image_size
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, size, size)).shape == (1, cfg.data.num_classes)
    if experiment == "compconv_demo":
        dm = instantiate(cfg.data)
        dm.setup("fit")
        assert dm.num_classes == cfg.model.num_classes == 10
