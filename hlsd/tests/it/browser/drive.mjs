// Drives Debian's Chromium (never a downloaded browser) with playwright-core against a running
// hlsd: plays a live stream for >= 20 s (segment boundaries and a discontinuity), samples the
// page's player state, takes a screenshot, then plays a VOD session to its end.
// Usage: node drive.mjs <base-url> <live-stream> <sim> <vod-session-id> <screenshot.png>
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [base, stream, sim, vodId, shot] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const profile = mkdtempSync(join(tmpdir(), 'hlsd-chromium-'));
const out = { live: { samples: [] }, vod: {}, console: [] };

const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1440, height: 960 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') out.console.push(m.text()); });
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  const sample = () => page.evaluate(() => {
    const v = document.getElementById('video');
    const p = window.hlsdState;
    return { wall: Date.now(), t: v.currentTime, paused: v.paused, ended: v.ended, w: v.videoWidth, h: v.videoHeight,
      frags: p.frags, disc: p.discontinuities, fatal: p.fatal, errors: p.errors.length, pdt: p.pdt,
      marker: p.marker, engine: p.engine, dropped: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : 0 };
  });

  await page.goto(`${base}/?sim=${sim}&stream=${stream}`);
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const s = await sample();
    if (s.t > 0 && !s.paused) break;
    await sleep(200);
  }
  out.live.startup_ms = Date.now() - t0;
  const start = Date.now();
  while (Date.now() - start < 23000) {
    out.live.samples.push(await sample());
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
    last = await sample();
    if (last.ended) break;
    await sleep(250);
  }
  out.vod = { ...last, elapsed_ms: Date.now() - v0,
    duration: await page.evaluate(() => document.getElementById('video').duration) };
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
