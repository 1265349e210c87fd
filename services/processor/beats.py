"""The music's beats from its notes, so the MIDI file's bars and beats fall on the music's.

The provider gives note times in seconds and no tempo; a DAW needs a tempo map. This module
estimates one from the note onsets alone: a pure, deterministic function of the notes,
cheap enough to run on every callback (linear in the notes and the song's length; about
the renderer's own cost, see ``bench/processor/beats.py``).

Why our own numpy and not a library (the measurements: ``docs/processing.md``, "Tempo and
beats"): librosa's beat tracker, run on an onset envelope built from the notes, found the
tempo in about half as many of our known-answer songs, put its beats on envelope frames,
knows neither tempo sections nor bars, and brings numba, llvmlite, scipy and scikit-learn
(hundreds of MB, a JIT compilation on first use); pretty_midi's ``estimate_tempo`` finds
a tempo hypothesis without phase and was rarely right; the other beat trackers (madmom,
BeatNet, Beat This!, aubio, essentia) take audio, not notes.

What notes give that audio does not: exact onset times, and roles (a drum kit is a drum
kit, a bass is a bass). The method:

1. an onset envelope at 100 frames/s, each onset weighted by velocity and role (kicks,
   snares, crashes and bass count more than hats, chords and melody);
2. its autocorrelation (one FFT), each lag scored with its half-bar and bar multiples,
   under a log-normal tempo prior around 110 BPM;
3. the candidates at 2:3 and 4:3 of that period (syncopated figures repeat every 1.5
   beats too), kept when they put clearly more onsets on their beats; the octave from the
   backbeat when there are drums (the beat is the slowest pulse kicks and snares both fall
   on), else the prior's;
4. the phase by a comb over the envelope, then period and phase fitted together by
   weighted least squares to the onsets near the beats, on a stretch that doubles until it
   is the whole song (sub-frame precision; jitter averages out);
5. tempo changes: windows the overall grid does not fit are estimated on their own; runs
   of windows on another tempo become sections, each starting on a beat of the one before
   and kept only if its grid puts clearly more onsets on beats;
6. the bars: 4 beats, or 3 when three-beat bars stand out far more clearly than four-beat
   ones; the first bar starts on the beat where kicks, crashes, bass notes and long chords
   gather and snares do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from .columns import note_columns
from .gm import sound_for
from .normalize import Instrument

__all__ = [
    "DEFAULT_BPM",
    "MAX_BPM",
    "MIN_BPM",
    "BeatGrid",
    "TempoSection",
    "estimate_beats",
]

Floats = npt.NDArray[np.float64]

MIN_BPM: Final = 40.0
MAX_BPM: Final = 240.0
#: What the file says when the notes cannot tell: MIDI's own default tempo.
DEFAULT_BPM: Final = 120.0
_BEATS_PER_BAR: Final = 4

_FPS: Final = 100.0  # envelope frames per second
_MAX_FRAMES: Final = 1 << 20  # a longer span is enveloped at a lower frame rate
_MIN_ONSETS: Final = 16  # distinct onset times below which there is too little to tell
_MIN_SPAN: Final = 3.0  # seconds between the first and the last onset, at least
_PRIOR_BPM: Final = 110.0
_PRIOR_OCTAVES: Final = 0.9  # the prior's standard deviation, in octaves
_ON_GRID: Final = 0.12  # an onset within this share of a beat belongs to that beat
_STEADY: Final = 0.4  # weighted share of onsets on the grid below which there is no beat
_WINDOW: Final = 12.0  # seconds per window when looking for tempo changes
_GROW: Final = 24.0  # seconds of onsets a grid is first fitted on, then twice as many, ...
_AT_ZERO: Final = 0.02  # seconds before 0 s that a first beat is moved to 0 s from
_CHANGE: Final = 0.06  # relative tempo difference that makes a new section
_AGREE: Final = 0.1  # how much worse than the best a window's fit may be and agree
_MIN_SECTION: Final = 3  # windows (hop: half a window) a section lasts at least
_CLEARLY: Final = 0.15  # the share of onsets a new section's grid must gain to be one
_RATIOS: Final = (1.0, 2 / 3, 4 / 3)  # period ratios tried against the first
_DRUMS_ON: Final = 0.9  # share of kicks and snares on the beats that needs no second look
_KEEP: Final = 0.08  # the share of onsets a ratio must gain over the first period
#: Lag multiples scored for a period, and their weights: the beat, the half bar, the bar.
_MULTIPLES: Final = ((1, 1.0), (2, 0.5), (4, 0.5))

# Onset weights by role, for the envelope (tempo, phase) and for the downbeat.
# 3/4 only when three beats a bar stand out this much, and this many times more than four.
_THREE_STANDS_OUT: Final = 1.0
_THREE_OVER_FOUR: Final = 1.5

_KICKS: Final = frozenset({35, 36})
_SNARES: Final = frozenset({37, 38, 39, 40})
_CRASHES: Final = frozenset({49, 52, 55, 57})
_KICK: Final = 1
_SNARE: Final = 2


@dataclass(frozen=True, slots=True)
class TempoSection:
    start_seconds: float  # a beat time where this tempo begins (the first: the first beat)
    bpm: float


@dataclass(frozen=True, slots=True)
class BeatGrid:
    #: The beats in seconds, ascending: the first at or after 0 s, running at least through
    #: the last onset, evenly spaced within a section.
    beats: tuple[float, ...]
    downbeat: int  # index in ``beats`` of the first bar start, 0 <= downbeat < beats_per_bar
    beats_per_bar: int
    sections: tuple[TempoSection, ...]
    bpm: float  # the longest section's; DEFAULT_BPM when not estimated
    estimated: bool
    reason: str  # "estimated", "too_few_notes", "no_steady_beat"


@dataclass(frozen=True, slots=True)
class _Onsets:
    times: Floats  # ascending
    weights: Floats  # for the envelope
    downbeat: Floats  # evidence that the onset starts a bar (negative: that it does not)
    drum: npt.NDArray[np.int8]  # _KICK, _SNARE or 0


def estimate_beats(instruments: Sequence[Instrument]) -> BeatGrid:
    """The beat grid of the notes, or the 120 BPM fallback saying why there is none."""
    onsets = _collect(instruments)
    if len(np.unique(np.round(onsets.times, 2))) < _MIN_ONSETS or (
        onsets.times[-1] - onsets.times[0] < _MIN_SPAN
    ):
        return _fallback(onsets.times, "too_few_notes")
    fps = min(_FPS, _MAX_FRAMES / (onsets.times[-1] + 1.0))
    envelope = _envelope(onsets.times, onsets.weights, fps)
    period = _period(envelope, fps, _PRIOR_BPM, _PRIOR_OCTAVES)
    span = (float(onsets.times[0]), float(onsets.times[-1]))
    period = _best_ratio(onsets, envelope, fps, period, span)
    period = _backbeat_octave(onsets, envelope, fps, period, span)
    spans = _sections(onsets, envelope, fps, period)
    fits = _fit_sections(onsets, envelope, fps, spans)
    if _on_grid_share(onsets, fits) < _STEADY:
        return _fallback(onsets.times, "no_steady_beat")
    return _grid(onsets, fits)


def _fallback(times: Floats, reason: str) -> BeatGrid:
    last = float(times[-1]) if len(times) else 0.0
    step = 60.0 / DEFAULT_BPM
    count = math.ceil(last / step) + 1  # through the last onset
    return BeatGrid(
        beats=tuple(index * step for index in range(count)),
        downbeat=0,
        beats_per_bar=_BEATS_PER_BAR,
        sections=(TempoSection(0.0, DEFAULT_BPM),),
        bpm=DEFAULT_BPM,
        estimated=False,
        reason=reason,
    )


def _drum_table(kick: float, snare: float, crash: float, other: float) -> Floats:
    """A value per MIDI drum pitch: for kicks, snares, crashes and the rest of the kit."""
    table = np.full(128, other)
    table[list(_KICKS)], table[list(_SNARES)], table[list(_CRASHES)] = kick, snare, crash
    return table


_DRUM_ROLE: Final = _drum_table(kick=1.0, snare=0.8, crash=1.0, other=0.4)
_DRUM_BAR: Final = _drum_table(kick=1.0, snare=-1.0, crash=2.0, other=0.0)
_DRUM_KIND: Final = _drum_table(kick=_KICK, snare=_SNARE, crash=0, other=0)


def _collect(instruments: Sequence[Instrument]) -> _Onsets:
    """Every onset with its weights, sorted by time (by arrays: a callback may hold
    100 000 notes; their columns are the renderer's too)."""
    parts: list[tuple[Floats, ...]] = []
    for instrument in instruments:
        columns = note_columns(instrument)
        count = len(columns.start)
        starts, velocity = columns.start, columns.velocity
        sound = sound_for(instrument.name)
        if sound.is_drum:
            pitch = columns.pitch
            role, bar, drum = _DRUM_ROLE[pitch], _DRUM_BAR[pitch], _DRUM_KIND[pitch]
        else:
            ends = columns.end
            bass = 32 <= sound.program <= 39
            role = np.full(count, 1.0 if bass else 0.6)
            bar = (1.5 if bass else 0.5) * np.minimum(ends - starts, 2.0)
            drum = np.zeros(count)
        parts.append((starts, role * (0.25 + 0.75 * velocity), bar, drum))
    times, weights, downbeat, drum = (
        np.concatenate([part[i] for part in parts]) if parts else np.zeros(0) for i in range(4)
    )
    order = np.argsort(times, kind="stable")
    return _Onsets(times[order], weights[order], downbeat[order], drum[order].astype(np.int8))


def _envelope(times: Floats, weights: Floats, fps: float) -> Floats:
    """Onset strength per frame, compressed so that chords and unisons do not dominate,
    and smoothed over a few frames so that jittered onsets still line up."""
    frames = np.rint(times * fps).astype(np.int64)
    strength = np.sqrt(np.bincount(frames, weights=weights))
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    smoothed: Floats = np.convolve(strength, kernel / kernel.sum(), mode="same")
    return smoothed


def _autocorrelation(envelope: Floats) -> Floats:
    centred = envelope - envelope.mean()
    size = 1 << (2 * len(centred) - 1).bit_length()
    spectrum = np.fft.rfft(centred, size)
    acf: Floats = np.fft.irfft(spectrum * np.conj(spectrum), size)[: len(centred)]
    return acf / acf[0] if acf[0] > 0 else acf


def _period(envelope: Floats, fps: float, prior_bpm: float, octaves: float) -> float:
    """The beat period in seconds: the autocorrelation's best lag under the tempo prior,
    refined between frames by a parabola through the peak."""
    acf = _autocorrelation(envelope)
    low = max(2, math.floor(fps * 60.0 / MAX_BPM))
    high = min(len(acf) - 2, math.ceil(fps * 60.0 / MIN_BPM))
    if high <= low:
        return 60.0 / prior_bpm
    lags = np.arange(low, high + 1)
    bpm = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm / prior_bpm) / octaves) ** 2)
    # A beat period repeats at the half bar and the bar too: a lag whose multiples are weak
    # (a dotted value, 1.5 beats) loses to the beat it is built on.
    positive = np.clip(acf, 0.0, None)
    metrical = sum(
        weight * np.interp(lags * multiple, np.arange(len(acf)), positive, right=0.0)
        for multiple, weight in _MULTIPLES
    )
    best = int(lags[int(np.argmax(metrical * prior))])
    left, centre, right = acf[best - 1], acf[best], acf[best + 1]
    curvature = left - 2 * centre + right
    shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return (best + float(np.clip(shift, -0.5, 0.5))) / fps


def _best_ratio(
    onsets: _Onsets,
    envelope: Floats,
    fps: float,
    period: float,
    span: tuple[float, float],
    ratios: tuple[float, ...] = _RATIOS,
) -> float:
    """The period, or a 2:3 or 3:4 relative of it that puts clearly more of the onsets in
    ``span`` on its beats: syncopated patterns (a kick on the "and" of 2, a bass pushed by
    an eighth) repeat every 1.5 beats too, and the autocorrelation can take them for the
    beat. When none fits well, the double and the half are tried as well."""
    best, best_score, best_share = period, -1.0, 0.0
    for ratio in ratios:
        candidate = period * ratio
        if not 60.0 / MAX_BPM <= candidate <= 60.0 / MIN_BPM:
            continue
        fit = _fit(onsets, envelope, fps, candidate, span)
        share = _share(onsets, *fit, span)
        if share + (_KEEP if ratio == 1 else 0.0) > best_score:
            best, best_score, best_share = fit[1], share + (_KEEP if ratio == 1 else 0.0), share
    if best_share < _STEADY and ratios == _RATIOS:
        return _best_ratio(onsets, envelope, fps, best, span, (1.0, 0.5, 2.0))
    return best


def _backbeat_octave(
    onsets: _Onsets, envelope: Floats, fps: float, period: float, span: tuple[float, float]
) -> float:
    """The octave the drums say: the beat is the slowest pulse that the kicks and the
    snares both fall on (a backbeat on 2 and 4 is on the beat, not between beats). Only
    decides with enough of both; otherwise the tempo prior's choice stands."""
    lo, hi = np.searchsorted(onsets.times, span)
    times, drum = onsets.times[lo:hi], onsets.drum[lo:hi]
    kicks, snares = times[drum == _KICK], times[drum == _SNARE]
    if len(kicks) < 8 or len(snares) < 8:
        return period
    drums = np.concatenate((kicks, snares))
    anchor, period = _fit(onsets, envelope, fps, period, span)
    if _on_share(drums, anchor, period) < _DRUMS_ON:
        # A 3:4 or 2:3 misreading leaves kicks and snares off the beats: take the ratio
        # that puts clearly more of them on.
        fits = [(anchor, period)] + [
            _fit(onsets, envelope, fps, period * ratio, span)
            for ratio in (3 / 4, 4 / 3, 2 / 3, 3 / 2)
            if 60.0 / MAX_BPM <= period * ratio <= 60.0 / MIN_BPM
        ]
        on_drums = [_on_share(drums, *fit) for fit in fits]
        best = int(np.argmax(on_drums))
        anchor, period = fits[best if on_drums[best] > on_drums[0] + _CLEARLY else 0]
    while 2 * period <= 60.0 / MIN_BPM:
        # The slower grid on the beats that carry more kicks, then the snares' share on it.
        on_kicks = [_on_share(kicks, anchor + shift, 2 * period) for shift in (0.0, period)]
        shift = period * int(np.argmax(on_kicks))
        if _on_share(snares, anchor + shift, 2 * period) < 0.5:
            break
        anchor, period = anchor + shift, 2 * period
    while period / 2 >= 60.0 / MAX_BPM and _on_share(snares, anchor + period / 2, period) > 0.5:
        period /= 2
    return period


def _share(onsets: _Onsets, anchor: float, period: float, span: tuple[float, float]) -> float:
    """The weighted share of the onsets in ``span`` within _ON_GRID of a beat of the grid."""
    lo, hi = np.searchsorted(onsets.times, span)
    weights = onsets.weights[lo:hi]
    phase = (onsets.times[lo:hi] - anchor) / period
    on = np.abs(phase - np.rint(phase)) < _ON_GRID
    return float(weights[on].sum() / weights.sum()) if len(weights) else 0.0


def _on_share(times: Floats, anchor: float, period: float) -> float:
    """The share of ``times`` within _ON_GRID of a beat of the grid."""
    phase = (times - anchor) / period
    return float(np.mean(np.abs(phase - np.rint(phase)) < _ON_GRID))


def _sections(
    onsets: _Onsets, envelope: Floats, fps: float, period: float
) -> list[tuple[float, float, float]]:
    """(start, end, period) of each stretch of steady tempo: windows whose own estimate
    (with the prior centred on the overall tempo, so the octave stays) agree."""
    first, last = float(onsets.times[0]), float(onsets.times[-1])
    if last - first < 2 * _WINDOW:
        return [(first, last, period)]
    hop = _WINDOW / 2
    starts = np.arange(first, last - _WINDOW + hop / 2, hop)
    fitted, agree = _windows_agreeing(
        onsets, _fit(onsets, envelope, fps, period, (first, last)), starts
    )
    local = []
    for start, agrees in zip(starts, agree, strict=True):
        if agrees:  # most windows, in most songs: no closer look
            local.append(fitted)
            continue
        lo, hi = int(start * fps), int((start + _WINDOW) * fps)
        guess = _period(envelope[lo:hi], fps, 60.0 / period, 0.35)
        local.append(_best_ratio(onsets, envelope, fps, guess, (start, start + _WINDOW)))
    runs: list[list[int]] = [[0]]
    for index in range(1, len(local)):
        reference = float(np.median([local[i] for i in runs[-1]]))
        if abs(local[index] / reference - 1.0) > _CHANGE:
            runs.append([])
        runs[-1].append(index)
    runs = _merge_short(runs, local)
    if len(runs) == 1:
        return [(first, last, period)]
    out = []
    for number, run in enumerate(runs):
        start = first if number == 0 else float(starts[run[0]]) + _WINDOW / 2
        end = last if number == len(runs) - 1 else float(starts[run[-1]]) + _WINDOW / 2
        out.append((start, end, float(np.median([local[i] for i in run]))))
    return out


def _windows_agreeing(
    onsets: _Onsets, fit: tuple[float, float], starts: Floats
) -> tuple[float, npt.NDArray[np.bool_]]:
    """The overall grid's period, and for each window whether that grid fits its onsets
    about as well as it fits the windows it fits best (a tempo change drifts off it within
    a window: 5 % over 24 beats is more than a beat). One pass over the onsets for all."""
    anchor, period = fit
    phase = (onsets.times - anchor) / period
    on = np.abs(phase - np.rint(phase)) < _ON_GRID
    on_weight = np.concatenate(([0.0], np.cumsum(onsets.weights * on)))
    all_weight = np.concatenate(([0.0], np.cumsum(onsets.weights)))
    lo = np.searchsorted(onsets.times, starts)
    hi = np.searchsorted(onsets.times, starts + _WINDOW)
    total = all_weight[hi] - all_weight[lo]
    share = np.divide(
        on_weight[hi] - on_weight[lo], total, out=np.ones_like(total), where=total > 0
    )
    return period, share >= np.quantile(share, 0.9) - _AGREE


def _merge_short(runs: list[list[int]], local: list[float]) -> list[list[int]]:
    """Runs too short to be a section join their neighbour (the previous one, or the next
    for the first); neighbours left with the same tempo join each other."""
    merged: list[list[int]] = []
    for run in runs:
        if merged and len(run) < _MIN_SECTION:
            merged[-1].extend(run)
        else:
            merged.append(list(run))
    if len(merged) > 1 and len(merged[0]) < _MIN_SECTION:
        head = merged.pop(0)
        merged[0][:0] = head
    joined: list[list[int]] = [merged[0]]
    for run in merged[1:]:
        before = float(np.median([local[i] for i in joined[-1]]))
        if abs(float(np.median([local[i] for i in run])) / before - 1.0) <= _CHANGE:
            joined[-1].extend(run)
        else:
            joined.append(run)
    return joined


def _phase(envelope: Floats, fps: float, period: float, start: float, end: float) -> float:
    """The time of a beat near ``start``: the comb offset that gathers most onset strength
    over the first _GROW seconds (further on, a period a hair off smears the comb)."""
    offsets = np.arange(0.0, period, 1.0 / fps)
    beats = np.arange(start, min(end, start + _GROW) + period, period)
    strength = _sample(envelope, (offsets[:, None] + beats[None, :]) * fps)
    return start + float(offsets[int(np.argmax(strength.sum(axis=1)))])


def _fit(
    onsets: _Onsets, envelope: Floats, fps: float, period: float, span: tuple[float, float]
) -> tuple[float, float]:
    """(anchor, period) of the grid that fits the onsets in ``span`` best near ``period``."""
    anchor = _phase(envelope, fps, period, *span)
    return _refine(onsets, anchor, period, *span, fixed=False)


def _sample(envelope: Floats, frames: Floats) -> Floats:
    """The envelope at fractional frames, linearly interpolated, 0 outside it (np.interp
    would take the whole envelope's frame numbers on every call)."""
    whole = np.floor(frames).astype(np.int64)
    inside = (whole >= 0) & (whole < len(envelope) - 1)
    whole = np.where(inside, whole, 0)
    fraction = frames - whole
    values: Floats = envelope[whole] * (1.0 - fraction) + envelope[whole + 1] * fraction
    return np.where(inside, values, 0.0)


def _refine(
    onsets: _Onsets, anchor: float, period: float, start: float, end: float, fixed: bool
) -> tuple[float, float]:
    """(anchor, period) fitted by weighted least squares to the onsets near the grid's
    beats between ``start`` and ``end``; with ``fixed``, the anchor stays (a beat shared
    with the previous section) and only the period moves. The fit starts on the first
    _GROW seconds and doubles its stretch each time: a period that is off by 0.1 % (a
    tenth of an envelope frame) would put an hour's beats on the wrong onsets."""
    stop = min(end, start + _GROW)
    while True:
        anchor, period = _refine_once(onsets, anchor, period, start, stop, fixed)
        if stop >= end:
            return anchor, period
        stop = min(end, start + 2 * (stop - start))


def _refine_once(
    onsets: _Onsets, anchor: float, period: float, start: float, end: float, fixed: bool
) -> tuple[float, float]:
    lo, hi = np.searchsorted(onsets.times, [start - period / 2, end + period / 2])
    times, weights = onsets.times[lo:hi], onsets.weights[lo:hi]
    # The stretch grows to the whole song: the same arithmetic into two reused buffers
    # (a fresh array per step of a 100 000-onset stretch costs as much as the step).
    offset, index = np.empty_like(times), np.empty_like(times)
    for tolerance in (0.2, _ON_GRID, _ON_GRID):
        np.subtract(times, anchor, out=offset)
        np.rint(np.divide(offset, period, out=index), out=index)
        distance = np.abs(offset - index * period, out=offset)
        near = (distance < tolerance * period).nonzero()[0]
        if len(near) < 4:
            break
        k = index[near]
        if k.max() == k.min():
            break
        t, w = times[near], weights[near]
        if fixed:
            period = float((w * k * (t - anchor)).sum() / (w * k * k).sum())
            continue
        # Sums of products, not ``w @ k``: BLAS's threads cost more than they save here;
        # ``.sum()``, not ``np.sum``: the same sum without the dispatch (~100 calls a song).
        total = w.sum()
        k_mean, t_mean = float((w * k).sum() / total), float((w * t).sum() / total)
        slope = float((w * (k - k_mean) * (t - t_mean)).sum() / (w * (k - k_mean) ** 2).sum())
        anchor, period = float(t_mean - slope * k_mean), slope
    return anchor, period


def _fit_sections(
    onsets: _Onsets, envelope: Floats, fps: float, spans: list[tuple[float, float, float]]
) -> list[tuple[float, float]]:
    """(first beat, period) per section; each section after the first starts on a beat of
    the one before (see :func:`_join`), and is kept only if its grid puts clearly more of
    its onsets on beats than the previous grid carried on would: a passage in double time
    or in triplets fits the old grid nearly as well, and is a change of feel, not of tempo."""
    fits: list[tuple[float, float]] = []
    for start, end, guess in spans:
        period = (
            guess
            if len(spans) == 1
            else _backbeat_octave(onsets, envelope, fps, guess, (start, end))
        )
        anchor = _phase(envelope, fps, period, start, end)
        anchor, period = _refine(onsets, anchor, period, start, end, fixed=False)
        if fits:
            anchor = _join(onsets, fits[-1], period, start)
            anchor, period = _refine(onsets, anchor, period, anchor, end, fixed=True)
            own = _share(onsets, anchor, period, (anchor, end))
            if own < _share(onsets, *fits[-1], (anchor, end)) + _CLEARLY:
                continue
        fits.append((anchor, period))
    return [_in_range(anchor, period) for anchor, period in fits]


def _join(onsets: _Onsets, previous: tuple[float, float], period: float, near: float) -> float:
    """The beat of the previous grid, within a window of ``near``, where the new tempo is
    taken to start: the one after which the new grid and before which the old one put the
    most onsets on beats."""
    anchor, previous_period = previous
    first = max(0, math.ceil((near - _WINDOW - anchor) / previous_period))
    count = int(2 * _WINDOW / previous_period) + 1
    candidates = anchor + np.arange(first, first + count) * previous_period
    lo, hi = np.searchsorted(onsets.times, [candidates[0], candidates[-1]])
    times, weights = onsets.times[lo:hi], onsets.weights[lo:hi]
    old = np.abs((times - anchor) / previous_period - np.rint((times - anchor) / previous_period))
    scores = []
    for start in candidates:
        new = np.abs((times - start) / period - np.rint((times - start) / period))
        off = np.where(times < start, old, new)
        scores.append(float(weights[off < _ON_GRID].sum()))
    return float(candidates[int(np.argmax(scores))])


def _in_range(anchor: float, period: float) -> tuple[float, float]:
    while 60.0 / period > MAX_BPM:
        period *= 2
    while 60.0 / period < MIN_BPM:
        period /= 2
    return anchor, period


def _beat_times(onsets: _Onsets, fits: list[tuple[float, float]]) -> Floats:
    """Each section's grid up to the next one's first beat; the first reaching back to the
    first beat at or after 0 s, the last on past the last onset. A beat that the grid puts
    just before 0 s (by less than _AT_ZERO: music that starts on a beat at 0 s, found a
    hair early) is kept, at 0 s."""
    parts: list[Floats] = []
    for number, (anchor, period) in enumerate(fits):
        if number == 0:
            anchor -= math.floor(anchor / period) * period
            if anchor < 0.0:  # -1e-12: rounding
                anchor += period
            if anchor - period > -_AT_ZERO:
                parts.append(np.zeros(1, dtype=np.float64))
        if number + 1 < len(fits):
            count = max(1, math.ceil((fits[number + 1][0] - anchor) / period - 0.5))
        else:
            count = math.floor((float(onsets.times[-1]) - anchor) / period) + 2
        parts.append(anchor + np.arange(count, dtype=np.float64) * period)
    return np.concatenate(parts)


def _on_grid_share(onsets: _Onsets, fits: list[tuple[float, float]]) -> float:
    """The weighted share of all the onsets that fall on a beat of the sections' grids."""
    beats = _beat_times(onsets, fits)
    if len(beats) < 2:
        return 0.0
    near = _nearest(beats, onsets.times)
    spacing = float(np.diff(beats).mean())
    on = np.abs(onsets.times - beats[near]) < _ON_GRID * spacing
    return float(onsets.weights[on].sum() / onsets.weights.sum())


def _nearest(beats: Floats, times: Floats) -> npt.NDArray[np.intp]:
    right = np.clip(np.searchsorted(beats, times), 1, len(beats) - 1)
    left = right - 1
    return np.where(times - beats[left] <= beats[right] - times, left, right)


def _grid(onsets: _Onsets, fits: list[tuple[float, float]]) -> BeatGrid:
    beats = _beat_times(onsets, fits)
    per_bar, downbeat = _bars(onsets, beats)
    sections = []
    for number, (anchor, period) in enumerate(fits):
        start = float(beats[0]) if number == 0 else anchor
        sections.append(TempoSection(start, 60.0 / period))
    ends = [section.start_seconds for section in sections[1:]] + [float(beats[-1])]
    lengths = [end - section.start_seconds for section, end in zip(sections, ends, strict=True)]
    return BeatGrid(
        beats=tuple(beats.tolist()),
        downbeat=downbeat,
        beats_per_bar=per_bar,
        sections=tuple(sections),
        bpm=sections[lengths.index(max(lengths))].bpm,
        estimated=True,
        reason="estimated",
    )


def _bars(onsets: _Onsets, beats: Floats) -> tuple[int, int]:
    """(beats per bar, index of the first bar start): 4, unless three beats a bar stand out
    clearly more than four do; the start is the bar position whose beats gather the most
    bar-start evidence (kicks, crashes, bass notes and long chords; snares count against)."""
    if len(beats) < 2:
        return _BEATS_PER_BAR, 0
    near = _nearest(beats, onsets.times)
    spacing = float(np.diff(beats).mean())
    on = np.abs(onsets.times - beats[near]) < _ON_GRID * spacing
    evidence = np.bincount(near[on], weights=onsets.downbeat[on], minlength=len(beats))
    by_metre = {}
    for per_bar in (3, _BEATS_PER_BAR):
        positions = np.asarray([evidence[p::per_bar].mean() for p in range(per_bar)])
        ranked = np.sort(positions)
        # How far the strongest position stands above the next, against the typical one.
        stands_out = (ranked[-1] - ranked[-2]) / (float(np.abs(positions).mean()) + 1e-9)
        by_metre[per_bar] = (float(stands_out), int(np.argmax(positions)))
    three, four = by_metre[3][0], by_metre[_BEATS_PER_BAR][0]
    per_bar = 3 if three >= _THREE_STANDS_OUT and three >= _THREE_OVER_FOUR * four else 4
    return per_bar, by_metre[per_bar][1]
