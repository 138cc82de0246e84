"""A light live plot of loss and validation score per epoch, painted with QPainter.

matplotlib is not a napari dependency and pyqtgraph is heavy; two or three polylines per
epoch need neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

_SERIES = {
    "loss": ("loss", QColor("#ff7f0e"), Qt.SolidLine),
    "val_loss": ("val loss", QColor("#ff7f0e"), Qt.DashLine),
    "score": ("val score", QColor("#2ca02c"), Qt.SolidLine),
}
_MARGIN = 28


class LossPlot(QWidget):
    """Training loss, validation loss (left axis) and a validation score in [0, 1] (right)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.score_name = "val IoU"
        self.series: dict[str, list[float]] = {key: [] for key in _SERIES}

    def clear(self, score_name: str = "val IoU") -> None:
        """Forget all points; ``score_name`` labels the [0, 1] curve."""
        self.score_name = score_name
        self.series = {key: [] for key in _SERIES}
        self.update()

    def add_epoch(self, loss: float, metrics: Mapping[str, float]) -> None:
        """Append one epoch: its loss and the validation figures Keras reported."""
        self.series["loss"].append(loss)
        self.series["val_loss"].append(metrics.get("val_loss", math.nan))
        score = next(
            (metrics[key] for key in ("val_iou", "val_accuracy") if key in metrics), math.nan
        )
        self.series["score"].append(score)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw the axes, the curves and a legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        area = QRectF(self.rect()).adjusted(_MARGIN, 16, -_MARGIN, -_MARGIN)
        text = self.palette().windowText().color()
        painter.setPen(QPen(text, 1))
        painter.drawRect(area)
        epochs = len(self.series["loss"])
        losses = [v for key in ("loss", "val_loss") for v in self.series[key] if math.isfinite(v)]
        top = max(losses, default=1.0) or 1.0
        painter.drawText(QPointF(2, area.top() + 10), f"{top:.2g}")
        painter.drawText(QPointF(area.right() + 4, area.top() + 10), "1")
        painter.drawText(QPointF(area.left(), self.height() - 6), f"epochs: {epochs}")
        for key, (_, colour, style) in _SERIES.items():
            scale = 1.0 if key == "score" else top
            points = self._points(self.series[key], scale, area)
            if len(points) == 1:
                painter.setPen(QPen(colour, 4))
                painter.drawPoint(points[0])
            elif points:
                painter.setPen(QPen(colour, 2, style))
                painter.drawPolyline(QPolygonF(points))
        x = area.left() + 4
        for key, (label, colour, _) in _SERIES.items():
            painter.setPen(QPen(colour, 2))
            name = self.score_name if key == "score" else label
            painter.drawText(QPointF(x, 12), name)
            x += painter.fontMetrics().horizontalAdvance(name) + 12
        painter.end()

    @staticmethod
    def _points(values: list[float], top: float, area: QRectF) -> list[QPointF]:
        count = len(values)
        step = area.width() / max(count - 1, 1)
        return [
            QPointF(area.left() + i * step, area.bottom() - area.height() * min(v / top, 1.0))
            for i, v in enumerate(values)
            if math.isfinite(v)
        ]
