// Drives the page against a running hlsd: plays a live stream for >= 20 s (segment boundaries
// and a discontinuity), samples the page's player state, takes a screenshot, then plays a VOD
// session to its end.
// Usage: node drive.mjs <base-url> <live-stream> <sim> <vod-session-id> <screenshot.png>
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { sample, sleep, withPage } from './chromium.mjs';

const [base, stream, sim, vodId, shot] = process.argv.slice(2);
const out = { live: { samples: [] }, vod: {}, console: [] };

await withPage({ width: 1440, height: 960 }, async (page, errors) => {
  out.console = errors;
  // The classic playlist (`ll=0`): this hlsd has no ingestd to forward ll.m3u8 to.
  await page.goto(`${base}/?sim=${sim}&stream=${stream}&ll=0`);
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const s = await sample(page);
    if (s.t > 0 && !s.paused) break;
    await sleep(200);
  }
  out.live.startup_ms = Date.now() - t0;
  const start = Date.now();
  while (Date.now() - start < 23000) {
    out.live.samples.push(await sample(page));
    if (!out.live.shot && Date.now() - start > 17000) {
      await page.screenshot({ path: shot, fullPage: true });
      out.live.shot = true;
    }
    await sleep(500);
  }
  out.live.hlsErrors = await page.evaluate(() => window.hlsdState.errors);

  await page.goto(`${base}/?sim=${sim}&session=${vodId}`);
  const v0 = Date.now();
  let last = null;
  while (Date.now() - v0 < 40000) {
    last = await sample(page);
    if (last.ended) break;
    await sleep(250);
  }
  out.vod = { ...last, elapsed_ms: Date.now() - v0,
    duration: await page.evaluate(() => document.getElementById('video').duration) };
});
console.log(JSON.stringify(out));
