"""Tests for on-disk trajectories (jepalab.data.trajectories) and the Two-Rooms collector."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from jepalab.cli import main as cli_main
from jepalab.data import (
    TRAJECTORY_FORMAT,
    Episode,
    EpisodeFileError,
    TrajectoryDataset,
    TrajectoryFrames,
    collate_trajectories,
    create_dataset,
    from_arrays,
    read_episode,
    read_meta,
    write_episodes,
)
from jepalab.data.sampling import SampleKey
from jepalab.data.trajectories import episode_path, split_episodes
from jepalab.envs.collect import collect_two_rooms, random_policy_actions, rollout_random_walk
from jepalab.envs.two_rooms import TwoRooms, TwoRoomsConfig
from jepalab.errors import DataError

LENGTHS = (10, 6, 3)


def _episode(rng: np.random.Generator, length: int, shape=(8, 6), a=2, s=3) -> Episode:
    return Episode(
        frames=rng.integers(0, 256, (length, *shape), dtype=np.uint8),
        actions=rng.normal(size=(length - 1, a)).astype(np.float32),
        states=rng.normal(size=(length, s)).astype(np.float32),
    )


@pytest.fixture
def episodes() -> list[Episode]:
    rng = np.random.default_rng(0)
    return [_episode(rng, length) for length in LENGTHS]


@pytest.fixture
def root(tmp_path: Path, episodes: list[Episode]) -> Path:
    return write_episodes(tmp_path / "ds", episodes, source={"env": "test"})


# -- format ----------------------------------------------------------------------------------


def test_round_trip_is_exact_and_meta_describes_the_data(tmp_path, episodes):
    rng = np.random.default_rng(1)
    episodes[0].goal_frame = rng.integers(0, 256, (8, 6), dtype=np.uint8)
    episodes[0].goal_state = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    root = write_episodes(
        tmp_path / "ds",
        episodes,
        fps=5,
        action_low=[-1, -2],
        action_high=[1, 2],
        source={"env": "test", "seed": 3},
    )
    for index, written in enumerate(episodes):
        read = read_episode(root, index)
        np.testing.assert_array_equal(read.frames, written.frames)
        np.testing.assert_array_equal(read.actions, written.actions)
        np.testing.assert_array_equal(read.states, written.states)
        assert read.frames.dtype == np.uint8 and read.actions.dtype == np.float32
    np.testing.assert_array_equal(read_episode(root, 0).goal_frame, episodes[0].goal_frame)
    np.testing.assert_array_equal(read_episode(root, 0).goal_state, episodes[0].goal_state)
    assert read_episode(root, 1).goal_frame is None
    meta = read_meta(root)
    all_states = np.concatenate([e.states for e in episodes])
    assert meta["format"] == TRAJECTORY_FORMAT
    assert meta["num_episodes"] == 3 and meta["episode_lengths"] == list(LENGTHS)
    assert (meta["action_dim"], meta["state_dim"], meta["frame_shape"]) == (2, 3, [8, 6])
    assert meta["fps"] == 5.0 and meta["action_low"] == [-1.0, -2.0]
    assert meta["action_high"] == [1.0, 2.0] and meta["source"] == {"env": "test", "seed": 3}
    np.testing.assert_allclose(meta["state_low"], all_states.min(0))
    np.testing.assert_allclose(meta["state_high"], all_states.max(0))
    assert sorted(p.name for p in (root / "episodes").iterdir()) == [
        f"episode_00000{i}.npz" for i in range(3)
    ]  # no temporary files left behind
    with np.load(episode_path(root, 1)) as npz:  # self-describing files
        assert set(npz.files) == {"frames", "actions", "states"}


def test_from_arrays_stacked_ragged_and_without_states(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 5, 8, 8, 3), dtype=np.uint8)
    actions = rng.normal(size=(4, 4, 2))
    root = from_arrays(tmp_path / "stacked", frames, actions, fps=10)
    assert read_meta(root)["frame_shape"] == [8, 8, 3] and read_meta(root)["state_dim"] == 0
    episode = read_episode(root, 3)
    np.testing.assert_array_equal(episode.frames, frames[3])
    np.testing.assert_array_equal(episode.actions, actions[3].astype(np.float32))
    assert episode.states.shape == (5, 0)

    ragged = [rng.integers(0, 256, (t, 8, 8), dtype=np.uint8) for t in (3, 7)]
    ragged_actions = [rng.normal(size=(t - 1, 1)) for t in (3, 7)]
    ragged_states = [rng.normal(size=(t, 2)) for t in (3, 7)]
    root = from_arrays(tmp_path / "ragged", ragged, ragged_actions, ragged_states)
    assert read_meta(root)["episode_lengths"] == [3, 7]
    np.testing.assert_array_equal(read_episode(root, 1).frames, ragged[1])
    with pytest.raises(ValueError, match="different numbers of episodes"):
        from_arrays(tmp_path / "bad", ragged, ragged_actions[:1])


def test_write_refuses_to_clobber_and_overwrite_replaces(tmp_path, episodes, root):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_episodes(root, episodes[:1])
    write_episodes(root, episodes[:1], overwrite=True)
    assert read_meta(root)["num_episodes"] == 1
    assert len(list((root / "episodes").iterdir())) == 1  # old episodes removed


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda e: setattr(e, "actions", e.actions[:-1]), r"episode 1: 'actions' has 4 rows"),
        (lambda e: setattr(e, "states", e.states[:-1]), r"episode 1: 'states' has 5 rows"),
        (lambda e: e.actions.__setitem__((2, 1), np.nan), r"episode 1: 'actions'.*non-finite"),
        (lambda e: e.states.__setitem__((0, 0), np.inf), r"episode 1: 'states'.*non-finite"),
        (
            lambda e: setattr(e, "frames", e.frames.astype(np.float32)),
            r"episode 1: 'frames'.*uint8",
        ),
        (lambda e: setattr(e, "frames", e.frames[..., None, None]), r"episode 1: 'frames'.*shape"),
        (lambda e: setattr(e, "frames", e.frames[:, :4]), r"episode 1: frame shape \(4, 6\)"),
        (lambda e: setattr(e, "actions", e.actions[:, :1]), r"episode 1: action size 1"),
    ],
)
def test_write_names_the_episode_and_key_of_a_bad_episode(tmp_path, episodes, change, match):
    change(episodes[1])
    with pytest.raises(ValueError, match=match):
        write_episodes(tmp_path / "ds", episodes)
    # episode 0 was written, meta.json was not: the directory reads as an interrupted write
    with pytest.raises(FileNotFoundError, match="interrupted write"):
        read_meta(tmp_path / "ds")


def test_read_errors_name_the_file_and_the_fix(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_meta(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a jepalab trajectory dataset: .*meta\.json"):
        TrajectoryDataset(tmp_path / "empty")
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "format": "other/2"}))
    with pytest.raises(ValueError, match="format 'other/2' is not 'jepalab.trajectories/1'"):
        read_meta(root)
    (root / "meta.json").write_text(json.dumps(meta))
    np.savez(episode_path(root, 1), frames=np.zeros((6, 8, 6), np.uint8))  # no actions
    with pytest.raises(EpisodeFileError, match=r"episode_000001\.npz has no key 'actions'"):
        read_episode(root, 1)
    np.savez(
        episode_path(root, 1),
        frames=np.zeros((6, 8, 8), np.uint8),
        actions=np.zeros((5, 2), np.float32),
        states=np.zeros((6, 3), np.float32),
    )
    with pytest.raises(EpisodeFileError, match=r"episode_000001\.npz: 'frames' has shape"):
        read_episode(root, 1)
    episode_path(root, 2).unlink()
    with pytest.raises(EpisodeFileError, match=r"episode_000002\.npz is missing"):
        read_episode(root, 2)


@pytest.mark.parametrize("damage", ["garbage", "zip_garbage", "truncated"])
def test_corrupt_file_is_logged_counted_and_skipped(root, caplog, damage):
    path = episode_path(root, 1)
    payload = {
        "garbage": b"not an npz at all",
        "zip_garbage": b"PK\x03\x04 this is not a zip file",
        "truncated": path.read_bytes()[: path.stat().st_size // 2],
    }[damage]
    path.write_bytes(payload)
    dataset = TrajectoryDataset(root, num_frames=3)
    assert len(dataset) == 8 + 4 + 1  # built from meta.json alone
    bad = [i for i in range(len(dataset)) if dataset.window(i)[0] == 1]
    with caplog.at_level(logging.WARNING, logger="jepalab.data"):
        assert dataset[bad[0]] is None
    assert dataset.num_corrupt == 1
    assert "episode_000001.npz" in caplog.text
    assert dataset[0] is not None  # other episodes unaffected
    frames = TrajectoryFrames(root)
    with caplog.at_level(logging.WARNING, logger="jepalab.data"):
        assert frames[10] is None  # frame 0 of episode 1
    assert frames.num_corrupt == 1


# -- windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_skip", [1, 3])
def test_windows_enumerate_every_start_with_the_right_frames_actions_states(
    root, episodes, frame_skip
):
    num_frames = 3
    dataset = TrajectoryDataset(root, num_frames=num_frames, frame_skip=frame_skip)
    span = (num_frames - 1) * frame_skip + 1
    expected = [(e, s) for e, t in enumerate(LENGTHS) for s in range(t - span + 1)]
    assert [dataset.window(i) for i in range(len(dataset))] == expected
    assert len(dataset) == (13 if frame_skip == 1 else 4 + 0 + 0)
    for index in (0, len(dataset) - 1):
        e, s = dataset.window(index)
        ids = s + frame_skip * np.arange(num_frames)
        sample = dataset[index]
        assert sample["frames"].shape == (num_frames, 1, 8, 6)
        assert sample["frames"].dtype == torch.float32
        torch.testing.assert_close(
            sample["frames"][:, 0], torch.from_numpy(episodes[e].frames[ids]).float() / 255
        )
        sums = [episodes[e].actions[i : i + frame_skip].sum(0) for i in ids[:-1]]
        torch.testing.assert_close(sample["actions"], torch.from_numpy(np.stack(sums)))
        torch.testing.assert_close(sample["states"], torch.from_numpy(episodes[e].states[ids]))
    assert dataset.action_dim == 2 and dataset.state_dim == 3 and dataset.frame_shape == (8, 6)


def test_concat_actions_keep_every_underlying_action_in_order(root, episodes):
    dataset = TrajectoryDataset(root, num_frames=3, frame_skip=3, action_reduce="concat")
    assert dataset.action_dim == 6
    e, s = dataset.window(1)
    actions = dataset[1]["actions"]
    assert actions.shape == (2, 6)
    torch.testing.assert_close(
        actions, torch.from_numpy(episodes[e].actions[s : s + 6].reshape(2, 6))
    )


def test_no_window_long_enough_is_a_clear_error(root):
    with pytest.raises(ValueError, match=r"num_frames=6 with frame_skip=2.*longest episode has 10"):
        TrajectoryDataset(root, num_frames=6, frame_skip=2)


def test_normalisation_and_channels(tmp_path, root, episodes):
    plain = TrajectoryDataset(root, num_frames=2)[0]["frames"]
    normed = TrajectoryDataset(root, num_frames=2, mean=0.5, std=0.25)[0]["frames"]
    torch.testing.assert_close(normed, (plain - 0.5) / 0.25)
    rgb3 = TrajectoryDataset(root, num_frames=2, channels=3)[0]["frames"]
    assert rgb3.shape == (2, 3, 8, 6) and torch.equal(rgb3[:, 2], plain[:, 0])

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 4, 8, 8, 3), dtype=np.uint8)
    rgb_root = from_arrays(tmp_path / "rgb", frames, np.zeros((1, 3, 2)))
    rgb = TrajectoryDataset(rgb_root, num_frames=2, mean=(0.1, 0.2, 0.3), std=(1, 2, 4))[0]
    expected = torch.from_numpy(frames[0, :2]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(rgb["frames"], (expected - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    luma = TrajectoryDataset(rgb_root, num_frames=2, channels=1)[0]["frames"]
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    torch.testing.assert_close(luma[:, 0], (expected * weights).sum(1))
    with pytest.raises(ValueError, match="mean/std need 1 or 3 values"):
        TrajectoryDataset(rgb_root, mean=(0.1, 0.2), std=1.0)
    with pytest.raises(ValueError, match="channels=2"):
        TrajectoryDataset(rgb_root, channels=2)


def test_collate_drops_none_and_counts_it(root):
    dataset = TrajectoryDataset(root, num_frames=3)
    items = [
        (dataset[0], SampleKey(0, 0, 7)),
        (None, SampleKey(1, 0, 7)),
        (dataset[5], SampleKey(5, 0, 7)),
    ]
    batch = collate_trajectories(items)
    assert batch.frames.shape == (2, 3, 1, 8, 6)
    assert batch.actions.shape == (2, 2, 2) and batch.states.shape == (2, 3, 3)
    assert (batch.step, batch.skipped) == (7, 1)
    with pytest.raises(DataError, match="every sample of the batch of step 8"):  # as logged
        collate_trajectories([(None, SampleKey(0, 0, 7))])


def test_registry_builds_both_datasets(root):
    assert len(create_dataset("trajectories", root=root, num_frames=2)) == 9 + 5 + 2
    assert len(create_dataset("trajectory_frames", root=root)) == sum(LENGTHS)


def test_video_backed_episode(tmp_path):
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), 8, axis=1)
    frames = np.repeat(frames, 8, axis=2)  # (5, 32, 32, 3) flat 8x8 blocks: near-lossless
    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    with av.open(str(root / "videos" / "ep.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv444p"
        stream.options = {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    write_episodes(root, [Episode(None, np.zeros((4, 2)), video="videos/ep.mp4")], fps=10)
    assert read_meta(root)["frame_shape"] == [32, 32, 3]
    episode = read_episode(root, 0)
    assert episode.video == "videos/ep.mp4" and episode.frames.shape == (5, 32, 32, 3)
    assert np.abs(episode.frames.astype(int) - frames).mean() < 3
    sample = TrajectoryDataset(root, num_frames=3, frame_skip=2)[0]
    assert sample["frames"].shape == (3, 3, 32, 32)


# -- frames as images ------------------------------------------------------------------------


def test_trajectory_frames_labels_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    states = rng.uniform(0, 10, (20, 4, 2)).astype(np.float32)
    frames = rng.integers(0, 256, (20, 4, 8, 8), dtype=np.uint8)
    root = from_arrays(tmp_path / "ds", frames, np.zeros((20, 3, 2)), states)
    dataset = TrajectoryFrames(root, label="position_cell", label_bins=3)
    labels = dataset.labels
    assert len(dataset) == len(labels) == 80 and dataset.num_classes == 9
    assert labels.min() >= 0 and labels.max() < 9 and len(labels.unique()) == 9
    flat = states.reshape(-1, 2).astype(np.float64)
    low, high = flat.min(0), flat.max(0)
    cells = np.clip(((flat - low) / (high - low) * 3).astype(int), 0, 2)
    np.testing.assert_array_equal(labels.numpy(), cells[:, 1] * 3 + cells[:, 0])  # y row, x col
    image, label = dataset[13]  # episode 3, frame 1
    assert image.shape == (1, 8, 8) and label == labels[13]
    torch.testing.assert_close(image[0], torch.from_numpy(frames[3, 1]).float() / 255)
    assert pickle.loads(pickle.dumps(dataset))._cache is None  # no episode shipped to workers

    train = TrajectoryFrames(root, episodes="train")
    test = TrajectoryFrames(root, episodes="test")
    assert (train.episodes, test.episodes) == (list(range(18)), [18, 19])
    assert len(train) + len(test) == 80 and bool((test.labels == -1).all())
    torch.testing.assert_close(test[0][0][0], torch.from_numpy(frames[18, 0]).float() / 255)
    assert TrajectoryFrames(root, episodes=[5, 2]).episodes == [5, 2]
    with pytest.raises(ValueError, match="episodes="):
        split_episodes(1, "test")
    with pytest.raises(ValueError, match="position_cell"):
        TrajectoryFrames(
            from_arrays(tmp_path / "nostates", frames, np.zeros((20, 3, 2))), label="position_cell"
        )


# -- Two-Rooms collector ---------------------------------------------------------------------


def test_random_walk_is_smooth_and_within_speed():
    world = TwoRooms()
    actions = random_policy_actions(world, np.random.default_rng(0), 50, 20)
    assert actions.shape == (50, 19, 2)
    speed = np.linalg.norm(actions, axis=-1) / world.config.max_speed
    assert speed.min() >= 0.3 - 1e-9 and speed.max() <= 1.0 + 1e-9
    heading = np.arctan2(actions[..., 1], actions[..., 0])
    turn = np.angle(np.exp(1j * np.diff(heading, axis=1)))
    assert 0.4 < turn.std() < 0.8  # heading noise 0.6 rad per step


def test_rollout_is_deterministic_free_and_follows_the_dynamics():
    world = TwoRooms()
    states, actions = rollout_random_walk(world, np.random.default_rng(3), 20, 12, 0.2)
    again, _ = rollout_random_walk(world, np.random.default_rng(3), 20, 12, 0.2)
    np.testing.assert_array_equal(states, again)
    assert states.dtype == actions.dtype == np.float32
    assert states.shape == (20, 12, 2) and actions.shape == (20, 11, 2)
    assert world.is_free(states).all()
    assert np.linalg.norm(actions, axis=-1).max() <= world.config.max_speed + 1e-6
    np.testing.assert_allclose(world.step(states[:, :-1], actions), states[:, 1:], atol=1e-5)


def test_collect_writes_a_deterministic_dataset_with_door_crossings(tmp_path):
    kwargs = dict(num_episodes=20, episode_length=12, seed=1, door_start_fraction=1.0)
    root = collect_two_rooms(tmp_path / "a", progress=False, **kwargs)
    other = collect_two_rooms(tmp_path / "b", progress=False, **kwargs)
    world = TwoRooms()
    meta = read_meta(root)
    assert meta["num_episodes"] == 20 and meta["episode_lengths"] == [12] * 20
    assert meta["frame_shape"] == [64, 64] and (meta["action_dim"], meta["state_dim"]) == (2, 2)
    assert meta["action_high"] == [world.config.max_speed] * 2
    assert meta["source"]["env"] == "two_rooms" and meta["source"]["seed"] == 1
    assert meta["source"]["config"] == TwoRoomsConfig().__dict__
    crossings = 0
    for e in range(20):
        episode, twin = read_episode(root, e), read_episode(other, e)
        np.testing.assert_array_equal(episode.frames, twin.frames)
        np.testing.assert_array_equal(episode.states, twin.states)
        np.testing.assert_array_equal(episode.frames, world.render(episode.states))
        rooms = world.room_of(episode.states)
        crossings += bool((rooms != rooms[0]).any())
    assert crossings >= 1 and crossings == meta["source"]["episodes_changing_room"]


def test_cli_collect_and_convert(tmp_path, capsys):
    out = tmp_path / "two_rooms"
    args = ["collect", f"out={out}", "episodes=6", "length=5", "progress=false"]
    assert cli_main(args) == 0
    line = capsys.readouterr().out
    assert "6 episodes, 30 frames" in line and "cross the door" in line
    assert len(TrajectoryDataset(out, num_frames=4)) == 6 * 2
    assert cli_main(args) == 2  # refuses to overwrite
    assert "overwrite" in capsys.readouterr().err
    assert cli_main([*args, "overwrite=true", "seed=2"]) == 0

    src = tmp_path / "arrays.npz"
    np.savez(src, frames=np.zeros((2, 4, 8, 8), np.uint8), actions=np.ones((2, 3, 1)))
    conv = tmp_path / "conv"
    assert cli_main(["convert-trajectories", f"src={src}", f"out={conv}", "fps=4"]) == 0
    assert read_meta(tmp_path / "conv")["fps"] == 4.0
    np.savez(src, frames=np.zeros((2, 4, 8, 8), np.uint8))
    assert cli_main(["convert-trajectories", f"src={src}", f"out={tmp_path / 'conv2'}"]) == 2
