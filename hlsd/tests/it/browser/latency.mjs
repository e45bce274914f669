// How far behind real time the page's live player is. Opens each page URL (e.g.
// `/?stream=<name>` for the low-latency rendition and `/?stream=<name>&ll=0` for the classic
// one) in its own tab of one headless Chromium, at the same time, waits for playback to start,
// then for `seconds` reads what the page measures once a second: now minus hls.js's
// `playingDate` (the PROGRAM-DATE-TIME of the picture on screen), in window.__latency.
// Usage: node latency.mjs <seconds> <page-url> [<page-url> ...]
// Prints one JSON object per URL (an array when several): {url, playing_ll, engine, startup_ms,
// played_s, latency_ms: [...], stalls, fatal: [...], errors: [...]}.
import { pathToFileURL } from 'node:url';
import { sleep, waitForPlayback, withPage } from './chromium.mjs';

export async function measure(page, url, seconds, errors) {
  await page.goto(url);
  const { started, startup_ms } = await waitForPlayback(page, 30000);
  if (!started) errors.push('playback did not start within 30 s');
  const first = await page.evaluate(() => document.getElementById('video').currentTime);
  // Samples of the first seconds are the player settling at its hold-back: measured after.
  await page.evaluate(() => { window.__latency = []; });
  await sleep(seconds * 1000);
  const s = await page.evaluate(() => {
    const p = window.hlsdState;
    return {
      t: document.getElementById('video').currentTime, playing_ll: window.__playing_ll, engine: p.engine,
      latency_ms: window.__latency.slice(), fatal: p.fatal,
      stalls: p.errors.filter((e) => e.details === 'bufferStalledError').length,
    };
  });
  return { url, startup_ms, played_s: +(s.t - first).toFixed(3), playing_ll: s.playing_ll, engine: s.engine,
    latency_ms: s.latency_ms, stalls: s.stalls, fatal: s.fatal, errors };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [secs, ...urls] = process.argv.slice(2);
  if (!(Number(secs) > 0) || !urls.length) {
    console.error('usage: node latency.mjs <seconds> <page-url> [<page-url> ...]');
    process.exit(2);
  }
  const out = await withPage({ width: 1280, height: 800 }, async (page, errors) => {
    const pages = [page];
    for (let i = 1; i < urls.length; i++) pages.push(await page.context().newPage());
    return Promise.all(urls.map((u, i) => measure(pages[i], u, Number(secs), i ? [] : errors)));
  });
  console.log(JSON.stringify(out.length === 1 ? out[0] : out));
}
