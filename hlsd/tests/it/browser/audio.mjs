// Does the page's player produce audible sound? Chromium gives no way to listen, so this taps the
// page's <video id="video"> with a Web Audio AnalyserNode and samples the spectrum and level while
// it plays. A stream can "play" (currentTime advancing) and still be silent, e.g. when the AAC is
// signalled to MSE as something the decoder gets wrong, so currentTime alone proves nothing.
// Usage: node audio.mjs <page-url> <seconds> [--keep-muted]
// Prints one JSON object: {played_s, samples: [{t, peak_hz, peak_db, rms_db}], ctx_state,
// source_buffers, errors}; the Rust test judges it (expect peak_hz near the test tone).
import { pathToFileURL } from 'node:url';
import { waitForPlayback, withPage } from './chromium.mjs';

// Runs in the page before its scripts: remember the MIME types handed to MSE, which is what
// decides how the audio gets decoded (hls.js may rewrite the codec it parsed from ADTS).
function recordSourceBuffers() {
  window.__sourceBuffers = [];
  for (const MS of [window.MediaSource, window.ManagedMediaSource]) {
    if (!MS) continue;
    const add = MS.prototype.addSourceBuffer;
    MS.prototype.addSourceBuffer = function (mime) { window.__sourceBuffers.push(mime); return add.call(this, mime); };
  }
}

// Runs in the page: routes the video's audio through an analyser and samples every 200 ms.
// The hlsd page starts muted (so autoplay is allowed everywhere); a muted element feeds
// silence into Web Audio too, so the element is unmuted unless asked not to be.
async function tapAudio({ seconds, keepMuted }) {
  const v = document.getElementById('video');
  const ctx = new AudioContext();
  const an = ctx.createAnalyser();
  an.fftSize = 4096; // ~11 Hz bins: 1 kHz is told apart from its neighbours
  an.smoothingTimeConstant = 0; // each sample stands alone; the default smoothing hides the first second
  // createMediaElementSource is allowed once per element; it also takes over the element's
  // output, so the graph must reach the destination or the element may stall.
  ctx.createMediaElementSource(v).connect(an);
  an.connect(ctx.destination);
  if (!keepMuted) v.muted = false;
  if (ctx.state !== 'running') await ctx.resume().catch(() => {});
  if (v.paused) await v.play().catch(() => {});
  const freq = new Float32Array(an.frequencyBinCount);
  const wave = new Float32Array(an.fftSize);
  const t0 = v.currentTime;
  const samples = [];
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    an.getFloatFrequencyData(freq);
    an.getFloatTimeDomainData(wave);
    let peak = 0;
    for (let i = 1; i < freq.length; i++) if (freq[i] > freq[peak]) peak = i;
    let sq = 0;
    for (const x of wave) sq += x * x;
    // Silence is -Infinity dB, which JSON cannot carry: clamp to -200 and drop the meaningless peak.
    const rms = Math.max(-200, 10 * Math.log10(sq / wave.length));
    const peakDb = Math.max(-200, freq[peak]);
    samples.push({ t: +v.currentTime.toFixed(3), peak_hz: peakDb > -200 ? Math.round((peak * ctx.sampleRate) / an.fftSize) : null,
      peak_db: +peakDb.toFixed(1), rms_db: +rms.toFixed(1) });
  }
  return { played_s: +(v.currentTime - t0).toFixed(3), samples, ctx_state: ctx.state, ctx_rate: ctx.sampleRate,
    muted: v.muted, source_buffers: window.__sourceBuffers || [] };
}

// Waits up to 20 s for playback to start, then samples for `seconds`. Usable from other drivers
// (e.g. with a differently launched browser); `errors` collects the page's console errors.
export async function probeAudio(page, url, seconds, errors, { keepMuted = false } = {}) {
  await page.addInitScript(recordSourceBuffers);
  await page.goto(url);
  const { started, startup_ms } = await waitForPlayback(page);
  if (!started) {
    errors.push('playback did not start within 20 s');
    return { played_s: 0, samples: [], ctx_state: null, source_buffers: await page.evaluate(() => window.__sourceBuffers), errors };
  }
  return { ...await page.evaluate(tapAudio, { seconds, keepMuted }), startup_ms, errors };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [url, secs, flag] = process.argv.slice(2);
  if (!url || !(Number(secs) > 0)) {
    console.error('usage: node audio.mjs <page-url> <seconds> [--keep-muted]');
    process.exit(2);
  }
  const out = await withPage({ width: 1280, height: 800 },
    (page, errors) => probeAudio(page, url, Number(secs), errors, { keepMuted: flag === '--keep-muted' }));
  console.log(JSON.stringify(out));
}
