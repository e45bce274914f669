// What the page drivers share: Debian's Chromium (never a downloaded browser) started headless
// through playwright-core with the flags that work on this kind of machine and a fresh profile,
// console errors collected, and one sample of the page's player state.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs `body(page, consoleErrors)` in a new headless Chromium; always closes it.
export async function withPage(viewport, body) {
  const profile = mkdtempSync(join(tmpdir(), 'hlsd-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    return await body(page, errors);
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// The page's video element and player probe (window.hlsdState) at this moment.
export const sample = (page) => page.evaluate(() => {
  const v = document.getElementById('video');
  const p = window.hlsdState;
  return { wall: Date.now(), t: v.currentTime, paused: v.paused, ended: v.ended, w: v.videoWidth, h: v.videoHeight,
    url: p.url, frags: p.frags, disc: p.discontinuities, fatal: p.fatal, errors: p.errors.length, pdt: p.pdt,
    marker: p.marker, engine: p.engine, dropped: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : 0 };
});

// Waits up to `ms` for the page's <video> to play (time advancing, not paused): whether it did
// and how long that took.
export async function waitForPlayback(page, ms = 20000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const playing = await page.evaluate(() => { const v = document.getElementById('video'); return !!v && v.currentTime > 0 && !v.paused; });
    if (playing) return { started: true, startup_ms: Date.now() - t0 };
    await sleep(200);
  }
  return { started: false, startup_ms: Date.now() - t0 };
}
