"""Stage train_classifier: the labelled training clips -> models/classifier, the small video classifier of the
sample-quality score (or a no-labels marker when the data has fewer than 2 classes)."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from functools import partial

    from videogpt.data.clip_store import read_clips_at, read_labels, store_attrs
    from videogpt.distributed import inference_device
    from videogpt.metrics.classifier import LabelledClips, train_classifier
    split = {name: LabelledClips(read_labels(paths.CLIPS, name), partial(read_clips_at, paths.CLIPS, name))
             for name in ("train", "test")}
    report = train_classifier(params.classifier, split["train"], test=split["test"], out_dir=paths.CLASSIFIER_DIR,
                              class_names=store_attrs(paths.CLIPS).get("class_names") or (),
                              device=inference_device(params.trainer))
    if not report["available"]:
        print(f"train_classifier: skipped, {report['reason']}")
        return
    print(f"train_classifier: {report['steps']} steps, accuracy train {report['train_accuracy']:.3f}, test "
          + (f"{report['test_accuracy']:.3f}" if report["test_accuracy"] is not None else "n/a (no labels)"))


if __name__ == "__main__":
    run("train_classifier", main)
