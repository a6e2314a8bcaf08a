"""Per-class results of an evaluation, from its confusion matrix: precision, recall, F1 and
support of each class, as a dict (for the metrics JSON), a text table (for the log), a Markdown
table (for TensorBoard and MLflow) and a picture of the matrix (for a PNG, TensorBoard and MLflow).
On imbalanced data one accuracy hides them."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 36  # pixels per cell of the picture


def per_class(confusion, class_names):
    """{class name: {"precision", "recall", "f1", "support"}}; confusion[true][predicted] counts
    images. A class never predicted (or without images) has a precision (or recall) of 0."""
    confusion = np.asarray(confusion, dtype=float)
    correct, predicted, support = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(correct), where=both > 0)
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(class_names, precision, recall, f1, support)
    }


def numbered(class_names):
    """ "3 shirt" for each class, or "3" where the class has no other name."""
    return [name if name == str(i) else f"{i} {name}" for i, name in enumerate(class_names)]


def table(report, confusion=None):
    """The per-class results, then the confusion matrix if given, as aligned text."""
    names = numbered(report) if confusion is not None else list(report)
    width = max(len("class"), *map(len, names))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name, r in zip(names, report.values()):
        lines.append(f"{name:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    if confusion is None:
        return "\n".join(lines)
    cell = max(4, len(str(int(np.max(confusion)))) + 1)
    lines.append("Confusion matrix (a row per true class, a column per predicted class):")
    lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(names))))
    lines += [f"{name:<{width}}" + "".join(f"{int(n):>{cell}}" for n in row) for name, row in zip(names, confusion)]
    return "\n".join(lines)


def picture(confusion, class_names):
    """The confusion matrix as an RGB image: a row per true class, a column per predicted class,
    each cell its count, shaded by the share of its row (dark: most of the class)."""
    confusion = np.asarray(confusion)
    font = ImageFont.load_default()
    labels = numbered(class_names)
    margin = max(int(font.getlength(label)) for label in labels) + 12
    n = len(class_names)
    image = Image.new("RGB", (margin + n * CELL + 8, CELL + n * CELL + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 4), "predicted class (columns), true class (rows)", fill="black", font=font)
    rows = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    for i in range(n):
        top = CELL + i * CELL
        draw.text((4, top + CELL // 3), labels[i], fill="black", font=font)
        draw.text((margin + i * CELL + CELL // 3, CELL - 14), str(i), fill="black", font=font)
        for j in range(n):
            shade = int(255 * (1 - shares[i, j]))
            box = (margin + j * CELL, top, margin + (j + 1) * CELL - 1, top + CELL - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            colour = "white" if shares[i, j] > 0.5 else "black"
            draw.text((box[0] + 6, top + CELL // 3), str(int(confusion[i, j])), font=font, fill=colour)
    return image


def markdown(table):
    """{name: {"precision", "recall", "f1", "support"}} as a Markdown table, which TensorBoard's Text tab draws."""
    rows = [
        f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
        for name, r in table.items()
    ]
    return "\n".join(["| | precision | recall | F1 | support |", "|---|---|---|---|---|", *rows])
