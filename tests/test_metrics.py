"""Tests of ``twostream.learn.metrics`` on hand-made score arrays with exact expected values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twostream.learn.metrics import (Scores, confusion_rows, evaluate, headline, load_scores, per_class_table,
                               save_scores, video_labels, video_scores, write_metrics)

# two videos (ids 7 and 3, interleaved) whose clip majority is right but whose mean is wrong
VOTE_PROBS = np.array([
    [0.55, 0.45, 0.0],  # video 7, label 0: right
    [0.9, 0.1, 0.0],  # video 3, label 1: wrong
    [0.55, 0.45, 0.0],  # video 7: right
    [0.45, 0.55, 0.0],  # video 3: right
    [0.0, 1.0, 0.0],  # video 7: wrong
    [0.45, 0.55, 0.0],  # video 3: right
])
VOTE_LABELS = np.array([0, 1, 0, 1, 0, 1])
VOTE_VIDEOS = np.array([7, 3, 7, 3, 7, 3])


def test_video_scores_mean_of_clips_sorted_ids() -> None:
    ids, scores = video_scores(VOTE_PROBS, VOTE_VIDEOS)
    assert ids.dtype == np.int64 and ids.tolist() == [3, 7]
    assert scores.dtype == np.float64 and scores.shape == (2, 3)
    np.testing.assert_array_equal(scores[0], [(0.9 + 0.45 + 0.45) / 3, (0.1 + 0.55 + 0.55) / 3, 0.0])
    np.testing.assert_array_equal(scores[1], [(0.55 + 0.55 + 0.0) / 3, (0.45 + 0.45 + 1.0) / 3, 0.0])


def test_clip_top1_differs_from_video_top1() -> None:
    result = evaluate(VOTE_PROBS, VOTE_LABELS, VOTE_VIDEOS, ["a", "b", "c"])
    assert result["clip_top1"] == 0.666667  # 4 of 6 clips
    assert result["video_top1"] == 0.0  # both video means pick the other class
    assert result["n_videos"] == 2 and result["n_clips"] == 6
    assert result["confusion"] == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert result["per_class"] == {"a": 0.0, "b": 0.0, "c": None}
    assert result["mean_class_acc"] == 0.0
    # K = 3 < 5: top-5 is top-3, always right
    assert result["video_top5"] == 1.0 and result["clip_top5"] == 1.0
    json.dumps(result)  # plain Python types only
    assert all(type(result[k]) is float for k in ("video_top1", "video_top5", "clip_top1",
                                                  "clip_top5", "mean_class_acc"))


def test_top5_with_more_classes() -> None:
    probs = np.array([
        [0.01, 0.3, 0.2, 0.15, 0.14, 0.1, 0.1],  # label 0 ranked last: top-5 miss
        [0.3, 0.11, 0.2, 0.15, 0.14, 0.1, 0.0],  # label 1 ranked 5th: top-5 hit, top-1 miss
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 6 top-1 hit
    ])
    result = evaluate(probs, [0, 1, 6], [0, 1, 2], [f"c{i}" for i in range(7)])
    assert result["video_top1"] == 0.333333
    assert result["video_top5"] == 0.666667
    assert result["clip_top5"] == 0.666667


def test_top5_with_two_classes_is_one() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    result = evaluate(probs, [1, 1], [0, 1], ["a", "b"])
    assert result["video_top1"] == 0.0 and result["video_top5"] == 1.0 and result["clip_top5"] == 1.0


def test_mean_class_acc_vs_overall_on_imbalanced_set() -> None:
    # class a: 3 videos all right; class b: 1 video wrong; class c: no video
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    result = evaluate(probs, [0, 0, 0, 1], [0, 1, 2, 3], ["a", "b", "c"])
    assert result["video_top1"] == 0.75
    assert result["mean_class_acc"] == 0.5  # (1 + 0) / 2, class c excluded
    assert result["per_class"] == {"a": 1.0, "b": 0.0, "c": None}
    assert result["confusion"] == [[3, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_expected_videos_without_scores_count_as_wrong() -> None:
    # 4 scored videos (3 right: 0, 2 and 3 of class a, b, b), plus videos 7 (a) and 8 (c) never scored
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    labels, videos = [0, 0, 1, 1], [0, 1, 2, 3]
    result = evaluate(probs, labels, videos, ["a", "b", "c"], expected=([8, 0, 1, 2, 3, 7], [2, 0, 0, 1, 1, 0]))
    assert (result["n_videos"], result["videos_scored"], result["missing"]) == (6, 4, [7, 8])
    assert result["video_top1"] == round(3 / 6, 6) and result["clip_top1"] == 0.75  # clips: scored ones
    assert result["video_top5"] == round(4 / 6, 6)  # top-3 of 3 classes holds every scored video
    assert result["per_class"] == {"a": round(1 / 3, 6), "b": 1.0, "c": 0.0}
    assert result["mean_class_acc"] == round((1 / 3 + 1 + 0) / 3, 6)
    same = evaluate(probs, labels, videos, ["a", "b", "c"], expected=([0, 1, 2, 3], [0, 0, 1, 1]))
    assert same == evaluate(probs, labels, videos, ["a", "b", "c"])  # nothing missing: as before
    with pytest.raises(ValueError, match=r"scored video 3 \(label 1\) is not among the expected"):
        evaluate(probs, labels, videos, ["a", "b", "c"], expected=([0, 1, 2], [0, 0, 1]))
    with pytest.raises(ValueError, match=r"scored video 2 \(label 1\) is not among the expected"):
        evaluate(probs, labels, videos, ["a", "b", "c"], expected=([0, 1, 2, 3], [0, 0, 2, 1]))


def test_headline_keys() -> None:
    test = evaluate(VOTE_PROBS, VOTE_LABELS, VOTE_VIDEOS, ["a", "b", "c"])
    assert headline(test, {**test, "video_top1": 0.25}) == {
        **{k: test[k] for k in ("video_top1", "video_top5", "clip_top1", "mean_class_acc", "n_videos",
                                "videos_scored")}, "val_video_top1": 0.25}


def test_confusion_counts_and_rows() -> None:
    eye = np.eye(3)
    pred = [0, 1, 1, 1, 0]
    true = [0, 0, 1, 1, 2]
    result = evaluate(eye[pred], true, [10, 11, 12, 13, 14], ["x", "y", "z"])
    assert result["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result["per_class"] == {"x": 0.5, "y": 1.0, "z": 0.0}
    assert result["mean_class_acc"] == 0.5
    assert result["video_top1"] == 0.6
    rows = confusion_rows(np.array(true), np.array(pred), ["x", "y", "z"])
    assert rows == [{"actual": "x", "predicted": "x"}, {"actual": "x", "predicted": "y"},
                    {"actual": "y", "predicted": "y"}, {"actual": "y", "predicted": "y"},
                    {"actual": "z", "predicted": "x"}]
    with pytest.raises(ValueError, match=r"video_pred must be in \[0, 3\)"):
        confusion_rows(np.array([0]), np.array([3]), ["x", "y", "z"])


def test_tie_picks_lowest_label() -> None:
    result = evaluate(np.array([[0.5, 0.5]]), [0], [0], ["a", "b"])
    assert result["video_top1"] == 1.0 and result["confusion"] == [[1, 0], [0, 0]]


def test_mismatched_labels_in_one_video() -> None:
    with pytest.raises(ValueError, match=r"video 4 has clips with different labels \[0, 2\]"):
        evaluate(np.full((3, 3), 1 / 3), [1, 0, 2], [9, 4, 4], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"video 4"):
        video_labels(np.array([0, 2]), np.array([4, 4]))


def test_evaluate_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="3 columns but 2 classes"):
        evaluate(np.zeros((1, 3)), [0], [0], ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        evaluate(np.zeros((1, 3)), [3], [0], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"videos must be \(2,\)"):
        evaluate(np.zeros((2, 3)), [0, 0], [0], ["a", "b", "c"])
    with pytest.raises(ValueError, match="N, K >= 1"):
        evaluate(np.zeros((0, 3)), [], [], ["a", "b", "c"])


def _scores() -> Scores:
    """Four clips of two videos, rows given out of (video, clip) order."""
    probs = np.array([[0.25, 0.75], [0.5, 0.5], [0.125, 0.875], [1.0, 0.0]], dtype=np.float32)
    return Scores(probs=probs, labels=np.array([1, 0, 1, 0]), videos=np.array([5, 2, 5, 2]),
                  clips=np.array([1, 1, 0, 0]), classes=["brush_hair", "ride_bike_é"])


def test_save_load_round_trip(tmp_path) -> None:
    path = tmp_path / "scores" / "spatial" / "val.npz"
    save_scores(path, _scores())
    loaded = load_scores(path)
    assert loaded.probs.dtype == np.float32 and loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.probs, [[1.0, 0.0], [0.5, 0.5], [0.125, 0.875], [0.25, 0.75]])
    assert loaded.labels.tolist() == [0, 0, 1, 1]
    assert loaded.videos.tolist() == [2, 2, 5, 5]
    assert loaded.clips.tolist() == [0, 1, 0, 1]
    assert loaded.classes == ["brush_hair", "ride_bike_é"]
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["classes", "clips", "expected_labels", "expected_videos", "labels",
                                      "probs", "videos"]
        assert data["classes"].dtype.kind == "U"
    assert loaded.expected_videos.tolist() == [2, 5] and loaded.expected_labels.tolist() == [0, 1]
    # saving what was loaded gives the same bytes
    again = tmp_path / "again.npz"
    save_scores(again, loaded)
    assert again.read_bytes() == path.read_bytes()


def test_save_rejects_duplicate_clip(tmp_path) -> None:
    scores = _scores()
    scores.clips[2] = 1
    with pytest.raises(ValueError, match=r"\(video, clip\) = \(5, 1\)"):
        save_scores(tmp_path / "x.npz", scores)


def test_scores_checks_shapes() -> None:
    with pytest.raises(ValueError, match="2 columns but 1 classes"):
        Scores(probs=np.zeros((1, 2)), labels=[0], videos=[0], clips=[0], classes=["a"])
    with pytest.raises(ValueError, match=r"clips must be \(1,\)"):
        Scores(probs=np.zeros((1, 2)), labels=[0], videos=[0], clips=[0, 1], classes=["a", "b"])


def test_per_class_table() -> None:
    results = {"spatial": {"per_class": {"a": 0.5, "b": None}},
               "temporal": {"per_class": {"a": 1.0, "b": 0.25}},
               "fusion": {"per_class": {"a": 0.75}}}
    assert per_class_table(results) == [
        {"class": "a", "spatial": 0.5, "temporal": 1.0, "fusion": 0.75},
        {"class": "b", "spatial": None, "temporal": 0.25, "fusion": None},
    ]
    with pytest.raises(ValueError, match="named 'class'"):
        per_class_table({"class": {"per_class": {}}})


def test_write_metrics(tmp_path) -> None:
    path = tmp_path / "metrics" / "spatial.json"
    write_metrics(path, {"video_top1": 0.5, "per_class": {"b": None, "a": 1.0}, "n_videos": 2})
    assert path.read_text(encoding="utf-8") == (
        '{\n "n_videos": 2,\n "per_class": {\n  "a": 1.0,\n  "b": null\n },\n "video_top1": 0.5\n}\n')
