"""Episode meta-batches through a torch DataLoader: episodes are drawn in the main process, workers only gather.

Because every episode is chosen by the EpisodeSampler before a worker sees it, the batches are the
same as ``sampler.sample(num_tasks)`` called in a loop, for any number of workers and start method.
Workers gather uint8 pixels (numpy fancy indexing, memory maps included); the float conversion runs
in the workers when the target device is the CPU, otherwise on the device after a (pinned) uint8 copy.
"""
from __future__ import annotations

import mmap
from collections import deque
from typing import Deque, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..errors import ConfigError
from .episode import EpisodeBatch
from .sampler import Episode, EpisodeSampler, ImageConverter, RawEpisodes, require_int, gather_host, make_batch


class EpisodeIndexSampler(Sampler[List[Episode]]):
    """Yields meta-batches (lists of ``num_tasks`` Episode); use with a DataLoader and ``batch_size=None``.

    Training mode (``episodes=None``): draws ``num_batches`` meta-batches (None: endless) from the
    sampler's seeded stream, recording the stream state before each draw in ``pending_states`` so a
    consumer that knows how many batches it used can checkpoint the exact position despite prefetching.
    Fixed mode: walks ``episodes`` in order, ``num_tasks`` at a time.
    """

    def __init__(self, sampler: EpisodeSampler, num_tasks: int, num_batches: Optional[int] = None,
                 episodes: Optional[Sequence[Episode]] = None) -> None:
        self.sampler = sampler
        self.num_tasks = require_int(num_tasks, "num_tasks")
        self.num_batches = None if num_batches is None else require_int(num_batches, "num_batches")
        self.episodes = None if episodes is None else list(episodes)
        if self.episodes is not None and num_batches is not None:
            raise ConfigError("give either episodes (fixed evaluation list) or num_batches (training stream), not both")
        self.pending_states: Deque[dict] = deque()

    def __len__(self) -> int:
        if self.episodes is not None:
            return -(-len(self.episodes) // self.num_tasks)
        if self.num_batches is None:
            raise TypeError("an endless EpisodeIndexSampler (num_batches=None) has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[List[Episode]]:
        if self.episodes is not None:
            for lo in range(0, len(self.episodes), self.num_tasks):
                yield self.episodes[lo:lo + self.num_tasks]
            return
        drawn = 0
        while self.num_batches is None or drawn < self.num_batches:
            self.pending_states.append(self.sampler.state_dict())
            yield self.sampler.sample_episodes(self.num_tasks)
            drawn += 1


def _reopen_memmap(filename: str, dtype: np.dtype, shape: tuple, offset: int) -> np.memmap:
    return np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset)


class EpisodeDataset(Dataset):
    """Map-style view of a split whose index is a meta-batch (list of Episode).

    ``dataset[episodes]`` -> RawEpisodes (uint8 CPU tensors) or, with a converter, a float EpisodeBatch
    on the CPU. Pickles a whole-file read-only memory map by file name, so spawned workers reopen it
    instead of copying the data.
    """

    def __init__(self, images: np.ndarray, converter: Optional[ImageConverter] = None) -> None:
        self.images = images
        self.converter = converter

    def __getitem__(self, episodes: Sequence[Episode]) -> Union[RawEpisodes, EpisodeBatch]:
        in_worker = get_worker_info() is not None  # results leave through shared memory: write them there
        raw = gather_host(self.images, episodes, shared=in_worker and self.converter is None)
        return raw if self.converter is None else make_batch(raw, self.converter, shared=in_worker)

    def __getstate__(self) -> dict:
        a = self.images
        if (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.filename
                and a.flags.c_contiguous and not a.flags.writeable):
            images = (_reopen_memmap, (a.filename, a.dtype, a.shape, a.offset))
        else:
            images = a
        return {"images": images, "converter": self.converter}

    def __setstate__(self, state: dict) -> None:
        images = state["images"]
        if isinstance(images, tuple):
            fn, args = images
            images = fn(*args)
        self.images = images
        self.converter = state["converter"]


def _keep(item):
    """collate_fn for batch_size=None: the dataset already returns a whole meta-batch."""
    return item


class EpisodeLoader:
    """Iterates EpisodeBatch on the sampler's device, built by DataLoader workers.

    Training: ``EpisodeLoader(sampler, num_tasks=4, num_batches=1000)`` (num_batches None: endless).
    Evaluation: ``EpisodeLoader(sampler, num_tasks=1, episodes=sampler.fixed_episodes(600, seed))``.
    num_workers=0 builds batches in this process with ``sampler.batch`` (uses storage="device").
    convert_in_workers: default True when the device is the CPU, else False (uint8 crosses, pinned).
    ``state_dict()`` is the stream position just after the last batch this loader yielded, whatever
    the workers prefetched; a new iteration resumes from there.
    """

    def __init__(self, sampler: EpisodeSampler, num_tasks: int = 1, num_batches: Optional[int] = None, *,
                 episodes: Optional[Sequence[Episode]] = None, num_workers: int = 2, prefetch_factor: int = 2,
                 pin_memory: Optional[bool] = None, convert_in_workers: Optional[bool] = None,
                 multiprocessing_context: Optional[str] = None) -> None:
        self.sampler = sampler
        self.index_sampler = EpisodeIndexSampler(sampler, num_tasks, num_batches, episodes)
        self.num_workers = require_int(num_workers, "num_workers", minimum=0)
        self.prefetch_factor = require_int(prefetch_factor, "prefetch_factor")
        on_cpu = sampler.device.type == "cpu"
        self.convert_in_workers = on_cpu if convert_in_workers is None else bool(convert_in_workers)
        self.pin_memory = (not on_cpu and torch.cuda.is_available()) if pin_memory is None else bool(pin_memory)
        self.multiprocessing_context = multiprocessing_context

    def __len__(self) -> int:
        return len(self.index_sampler)

    def _dataloader(self) -> DataLoader:
        dataset = EpisodeDataset(self.sampler.split.images, self.sampler.converter if self.convert_in_workers else None)
        return DataLoader(
            dataset, sampler=self.index_sampler, batch_size=None, collate_fn=_keep, num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory,
            multiprocessing_context=self.multiprocessing_context,
            generator=torch.Generator().manual_seed(0),  # keeps the global torch RNG untouched
        )

    def __iter__(self) -> Iterator[EpisodeBatch]:
        pending = self.index_sampler.pending_states
        if pending:  # a previous iteration stopped early: rewind past what it prefetched but never yielded
            self.sampler.load_state_dict(pending[0])
            pending.clear()
        if self.num_workers == 0:
            for episodes in self.index_sampler:
                batch = self.sampler.batch(episodes)
                if pending:
                    pending.popleft()
                yield batch
            return
        for item in self._dataloader():
            if pending:
                pending.popleft()
            if isinstance(item, RawEpisodes):
                yield self.sampler.to_batch(item)
            else:
                yield item.to(self.sampler.device)

    def state_dict(self) -> dict:
        """The training stream position after the last yielded batch (format of EpisodeSampler.state_dict)."""
        pending = self.index_sampler.pending_states
        return dict(pending[0]) if pending else self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.index_sampler.pending_states.clear()
        self.sampler.load_state_dict(state)
