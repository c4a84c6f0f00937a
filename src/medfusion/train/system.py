"""The Lightning module: trains a built :class:`~medfusion.models.MultimodalClassifier`.

It receives the model (it never builds one), so any strategy and any encoders train the
same way. Logged each epoch (CSV and TensorBoard): losses, the fused model's validation
AUROC / accuracy, each modality probe's validation AUROC (``val/probe_auroc/<m>``), and
with OGM-GE the mean gradient coefficient per modality, with gradient blending each head's
weight (``train/blend_weight/<head>``). With a joint-embedding fusion
also the contrastive temperature and, on the validation pairs, Recall@1/5/10 in both
directions of every modality pair (``val/recall@5/image_to_text``, their mean
``val/recall_mean``). Under DDP the validation outputs of every process are gathered
before a metric is computed, so each sample counts once.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from medfusion.fusion.joint_embedding import JointEmbeddingFusion
from medfusion.metrics import binary_auroc, recall_at_k
from medfusion.models import MultimodalClassifier
from medfusion.train.balance import GradientBlend, ModalityProbes, modulate_gradients, ogm_ge_coefficients
from medfusion.train.config import BalanceConfig, OptimConfig
from medfusion.types import MultimodalBatch


def probe_dims(model: MultimodalClassifier) -> dict[str, int]:
    """Feature size per modality that the probes read (encoder out_dim, or early featurizer out_dim)."""
    if model.fusion.takes_raw_inputs:
        return {m: f.out_dim for m, f in model.fusion.featurizers.items()}
    return {m: e.out_dim for m, e in model.encoders.items()}


class FusionSystem(L.LightningModule):
    """Training, validation and test steps around a multimodal classifier.

    Args:
        model: the classifier to train.
        optim: learning rate, weight decay.
        balance: class weights and modality balancing.
        class_weights: (K,) cross-entropy weights, or None.
        task: "classification" (objective: the classifier's total loss) or "contrastive"
            (objective: the joint embedding's contrastive loss alone).

    Raises:
        ValueError: on an unknown task, or "contrastive" without a joint-embedding fusion.
    """

    def __init__(self, model: MultimodalClassifier, optim: OptimConfig, balance: BalanceConfig,
                 class_weights: Tensor | None = None, task: str = "classification") -> None:
        super().__init__()
        if task not in ("classification", "contrastive"):
            raise ValueError(f"task: expected 'classification' or 'contrastive', received {task!r}")
        self.joint = isinstance(model.fusion, JointEmbeddingFusion)
        if task == "contrastive" and not self.joint:
            raise ValueError(f"task 'contrastive' needs a joint-embedding fusion, received "
                             f"{type(model.fusion).__name__}")
        self.task = task
        self.model = model
        self.optim, self.balance = optim, balance
        blending = balance.modality == "gradient_blending"
        # gradient blending: the unimodal heads train their encoders, their losses weighted with the fused one
        self.probes = ModalityProbes(probe_dims(model), num_classes=2, detach=not blending)
        self.blend = GradientBlend(list(self.probes.heads)) if blending else None
        self.register_buffer("class_weights", class_weights, persistent=True)
        self._coefficients: dict[str, float] = {}
        self._outputs: dict[str, list[dict[str, Tensor]]] = {"val": [], "test": []}

    def _features(self, batch: MultimodalBatch, present: dict[str, Tensor]):
        """(encoder outputs or None, {modality: (B, D) probe features})."""
        if self.model.fusion.takes_raw_inputs:
            featurizers = self.model.fusion.featurizers
            return None, {m: featurizers[m](batch.inputs[m], batch.masks.get(m), present[m])
                          if m in batch.inputs else torch.zeros(len(batch.labels), featurizers[m].out_dim,
                                                                device=self.device)
                          for m in featurizers}
        encoded = self.model.encode(batch, present)
        return encoded, {m: out.pooled for m, out in encoded.items()}

    def _step(self, batch: MultimodalBatch, stage: str = "train"):
        present = self.model.training_presence(batch)
        encoded, pooled = self._features(batch, present)
        output = self.model.fuse(batch, present, features=encoded)
        losses = self.model.losses(output, present, batch.labels, self.class_weights)
        probe_logits = self.probes(pooled)
        unimodal = self.probes.losses(probe_logits, present, batch.labels)
        losses["probes"] = sum(unimodal.values(), losses["total"].new_zeros(()))
        if self.blend is not None:
            heads = {"fused": losses["total"], **unimodal}
            if self.training or stage == "val":
                counts = {"fused": len(batch.labels), **{m: int(present[m].sum()) for m in unimodal}}
                self.blend.record("train" if self.training else "val", heads, counts)
            losses["objective"] = self.blend.blend(heads)
            return output, losses, probe_logits, present
        if self.task == "contrastive":
            # a batch with no complete pair has no contrastive term: a zero that keeps the graph
            main = losses.get("contrastive", output.fused.sum() * 0.0)
        else:
            main = losses["total"]
        losses["objective"] = main + self.balance.probe_weight * losses["probes"]
        return output, losses, probe_logits, present

    def training_step(self, batch: MultimodalBatch, batch_index: int) -> Tensor:
        _, losses, probe_logits, present = self._step(batch)
        if self.balance.modality == "ogm_ge":
            self._coefficients = ogm_ge_coefficients(probe_logits, present, batch.labels, self.balance.ogm_alpha)
            for m, value in self._coefficients.items():
                self.log(f"train/ogm_coefficient/{m}", value, on_step=False, on_epoch=True, batch_size=len(batch.labels))
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, prog_bar=name == "objective",
                     batch_size=len(batch.labels))
        if self.joint:
            self.log("train/temperature", self.model.fusion.temperature, on_step=False, on_epoch=True,
                     batch_size=len(batch.labels))
        return losses["objective"]

    def on_after_backward(self) -> None:
        if self.balance.modality == "ogm_ge" and self._coefficients:
            modulate_gradients(self.model.encoders, self._coefficients)

    def _evaluate(self, batch: MultimodalBatch, stage: str) -> None:
        output, losses, probe_logits, present = self._step(batch, stage)
        record = {"prob": output.logits.softmax(-1)[:, 1].detach(), "label": batch.labels.detach()}
        for m, logits in probe_logits.items():
            record[f"probe/{m}"] = logits.softmax(-1)[:, 1].detach()
            record[f"present/{m}"] = present[m]
        if self.joint:
            for m, embedding in output.embeddings.items():
                record[f"embedding/{m}"] = embedding.detach()
        self._outputs[stage].append(record)
        self.log(f"{stage}/loss", losses["objective"].detach(), on_epoch=True, batch_size=len(batch.labels))

    def validation_step(self, batch: MultimodalBatch, batch_index: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: MultimodalBatch, batch_index: int) -> None:
        self._evaluate(batch, "test")

    def _epoch_metrics(self, stage: str) -> None:
        records = self._outputs[stage]
        if not records:
            return
        merged = self._gathered({k: torch.cat([r[k] for r in records]) for k in records[0]})
        self._outputs[stage] = []
        labels = merged["label"]
        if self.task == "classification":  # a contrastive run's head is untrained
            if labels.unique().numel() == 2:
                self.log(f"{stage}/auroc", binary_auroc(merged["prob"], labels), prog_bar=True)
            self.log(f"{stage}/accuracy", float(((merged["prob"] > 0.5).long() == labels).float().mean()))
        for m in self.probes.heads:
            rows = merged[f"present/{m}"]
            if rows.any() and labels[rows].unique().numel() == 2:
                self.log(f"{stage}/probe_auroc/{m}", binary_auroc(merged[f"probe/{m}"][rows], labels[rows]))
        if self.joint:
            self._log_recall(stage, merged)

    def _gathered(self, merged: dict[str, Tensor]) -> dict[str, Tensor]:
        """The epoch's outputs of every process, concatenated (the process's own when not distributed).

        Lightning's distributed sampler pads every process to the same number of samples,
        so the per-process tensors have equal lengths.
        """
        if self.trainer.world_size == 1:
            return merged
        gathered = {}
        for k, v in merged.items():  # gloo gathers no bool tensors
            every = self.all_gather(v.to(torch.uint8) if v.dtype == torch.bool else v).flatten(0, 1)
            gathered[k] = every.bool() if v.dtype == torch.bool else every
        return gathered

    def _log_recall(self, stage: str, merged: dict[str, Tensor]) -> None:
        """Recall@1/5/10 of each ordered modality pair over the samples having both, and their mean."""
        modalities = self.model.modalities
        values = []
        for a in modalities:
            for b in modalities:
                rows = merged[f"present/{a}"] & merged[f"present/{b}"]
                if a == b or int(rows.sum()) < 2:
                    continue
                similarity = merged[f"embedding/{a}"][rows] @ merged[f"embedding/{b}"][rows].T
                for k, value in recall_at_k(similarity).items():
                    self.log(f"{stage}/recall@{k}/{a}_to_{b}", value)
                    values.append(value)
        if values:
            self.log(f"{stage}/recall_mean", sum(values) / len(values), prog_bar=self.task == "contrastive")

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")
        if self.blend is not None and not self.trainer.sanity_checking:
            sums = self.blend.sums
            if self.trainer.world_size > 1:
                sums = self.trainer.strategy.reduce(sums.clone(), reduce_op="sum")
            for head, weight in self.blend.update(sums).items():
                self.log(f"train/blend_weight/{head}", weight)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    def transfer_batch_to_device(self, batch: MultimodalBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
