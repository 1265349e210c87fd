// Playback in the browser with Web Audio: an oscillator voice per melodic note (one
// waveform per instrument), a filtered noise burst per drum hit; nothing to download.
// Notes are scheduled a little ahead of the audio clock, which also drives the cursor.

const WAVES = ["triangle", "sawtooth", "square", "sine"];
const LOOKAHEAD = 0.4; // seconds of notes scheduled ahead of the clock
const TICK_MS = 100; // how often the scheduler looks ahead
const LEAD_IN = 0.05; // seconds between pressing play and the first sound

export class Player {
  /** `onState(state)` is told "playing" or "stopped"; `onEnd()` when the task's end is reached. */
  constructor(onState) {
    this.onState = onState;
    this.context = null;
    this.state = "stopped";
    this.offset = 0;
    this.voices = new Set();
  }

  /** Where playback is, in task seconds: the audio clock while playing. */
  position() {
    if (this.state !== "playing") return this.offset;
    return Math.max(this.offset, this.offset + this.context.currentTime - this.startedAt);
  }

  /** Plays `instruments` (each with notes, is_drum and its index) from `from` to `duration`. */
  async play(instruments, from, duration) {
    this.stop();
    this.context ??= this.createContext();
    await this.context.resume();
    this.events = instruments
      .flatMap((instrument) => instrument.notes.map((note) => ({ note, instrument })))
      .filter(({ note }) => note[1] >= from)
      .sort((a, b) => a.note[1] - b.note[1]);
    this.next = 0;
    this.offset = from;
    this.duration = duration;
    this.startedAt = this.context.currentTime + LEAD_IN;
    this.state = "playing";
    this.timer = setInterval(() => this.schedule(), TICK_MS);
    this.schedule();
    this.onState(this.state);
  }

  /** Stops every sounding voice; the position stays where playback was, or goes back to
   * the start with `rewind` (the end was reached). */
  stop(rewind = false) {
    if (this.state !== "playing") return;
    this.offset = rewind ? 0 : Math.min(this.position(), this.duration);
    clearInterval(this.timer);
    for (const voice of this.voices) voice.stop();
    this.voices.clear();
    this.state = "stopped";
    this.onState(this.state);
  }

  seek(seconds) {
    if (this.state !== "playing") this.offset = seconds;
  }

  createContext() {
    const context = new AudioContext();
    this.output = context.createDynamicsCompressor();
    const master = context.createGain();
    master.gain.value = 0.6;
    this.output.connect(master).connect(context.destination);
    this.noise = context.createBuffer(1, context.sampleRate / 2, context.sampleRate);
    const samples = this.noise.getChannelData(0);
    for (let i = 0; i < samples.length; i += 1) samples[i] = Math.random() * 2 - 1;
    return context;
  }

  schedule() {
    const now = this.position();
    if (now >= this.duration) {
      this.stop(true);
      return;
    }
    while (this.next < this.events.length && this.events[this.next].note[1] < now + LOOKAHEAD) {
      const { note, instrument } = this.events[this.next];
      this.next += 1;
      const at = this.startedAt + note[1] - this.offset;
      this.track(instrument.is_drum ? this.drum(note, at) : this.tone(note, at, instrument.index));
    }
  }

  track(source) {
    this.voices.add(source);
    source.addEventListener("ended", () => this.voices.delete(source));
  }

  tone([pitch, start, end, velocity], at, index) {
    const { context } = this;
    const oscillator = context.createOscillator();
    oscillator.type = WAVES[index % WAVES.length];
    oscillator.frequency.value = 440 * 2 ** ((pitch - 69) / 12);
    const gain = context.createGain();
    const stopAt = at + Math.max(0.03, end - start);
    const peak = 0.12 * (0.3 + 0.7 * velocity);
    gain.gain.setValueAtTime(0, at);
    gain.gain.linearRampToValueAtTime(peak, at + 0.01);
    gain.gain.setValueAtTime(peak, Math.max(at + 0.01, stopAt - 0.03));
    gain.gain.linearRampToValueAtTime(0, stopAt);
    oscillator.connect(gain).connect(this.output);
    oscillator.start(at);
    oscillator.stop(stopAt);
    return oscillator;
  }

  /** A noise burst shaped by the General MIDI drum's family: kick low, cymbals high. */
  drum([pitch, , , velocity], at) {
    const { context } = this;
    const source = context.createBufferSource();
    source.buffer = this.noise;
    const filter = context.createBiquadFilter();
    const kick = pitch <= 36;
    const snare = pitch === 38 || pitch === 40;
    filter.type = kick ? "lowpass" : snare ? "bandpass" : "highpass";
    filter.frequency.value = kick ? 160 : snare ? 1800 : 6000;
    const decay = kick ? 0.25 : snare ? 0.15 : 0.07;
    const gain = context.createGain();
    gain.gain.setValueAtTime((kick ? 0.9 : 0.35) * (0.3 + 0.7 * velocity), at);
    gain.gain.exponentialRampToValueAtTime(0.001, at + decay);
    source.connect(filter).connect(gain).connect(this.output);
    source.start(at);
    source.stop(at + decay);
    return source;
  }
}
