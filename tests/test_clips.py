import pytest

from twostream.ingest.clips import clip_starts, flow_pairs, middle_frame, needed_pairs, sg3i_frames


def test_clip_starts_one_per_second_at_6fps():
    # 3 s at 6 fps = 18 resampled frames; 3-frame clips every 6 frames
    assert clip_starts(18, 3, 6) == [0, 6, 12]
    assert clip_starts(14, 3, 6) == [0, 6]
    assert clip_starts(2, 3, 6) == []
    assert clip_starts(3, 3, 6) == [0]


def test_clip_frames_of_a_clip():
    assert middle_frame(6, 3) == 7
    assert middle_frame(6, 4) == 8
    assert sg3i_frames(6, 3) == (6, 7, 8)
    assert sg3i_frames(0, 5) == (0, 2, 4)
    assert flow_pairs(6, 3, 2) == [6, 7]
    assert flow_pairs(0, 5, 2) == [1, 2]
    assert flow_pairs(0, 3, 1) == [0]


def test_needed_pairs_only_inside_clips():
    assert needed_pairs(18, 3, 6, 2) == [0, 1, 6, 7, 12, 13]
    assert needed_pairs(18, 3, 1, 2) == list(range(17))


@pytest.mark.parametrize("args", [(0, 3, 0), (0, 3, 3), (0, 1, 1)])
def test_bad_flow_stack(args):
    with pytest.raises(ValueError, match="flow.stack"):
        flow_pairs(*args)


def test_bad_clip_params():
    with pytest.raises(ValueError, match="clip.frames"):
        clip_starts(10, 0, 6)
    with pytest.raises(ValueError, match="SG3I"):
        sg3i_frames(0, 2)
