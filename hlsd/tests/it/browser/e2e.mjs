// The operator page against the real daemons, in Debian's Chromium (never a downloaded
// browser) driven by playwright-core. Two modes:
//   node e2e.mjs <base-url> watch <sim> <channel> <seconds>
//       opens the page, clicks the device's "Watch ch <channel>" button (the page POSTs the
//       watch to hlsd, which asks ingestd, which sends 0x9101 to the terminal), then samples
//       the player for <seconds> once it plays;
//   node e2e.mjs <base-url> play <query> <seconds>
//       opens `/?<query>` (e.g. `sim=...&session=...`) and samples the player until it ends
//       or <seconds> pass.
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [base, mode, ...rest] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const profile = mkdtempSync(join(tmpdir(), 'hlsd-e2e-chromium-'));
const out = { samples: [], console: [] };

const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
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
    return { wall: Date.now(), t: v.currentTime, paused: v.paused, ended: v.ended, w: v.videoWidth,
      h: v.videoHeight, url: p.url, frags: p.frags, fatal: p.fatal, errors: p.errors.length, engine: p.engine };
  });
  let seconds;
  if (mode === 'watch') {
    const [sim, channel, secs] = rest;
    seconds = Number(secs);
    await page.goto(`${base}/`);
    const button = page.getByRole('button', { name: `Watch ch ${channel}` });
    await button.first().waitFor({ timeout: 15000 });
    out.device_listed = await page.locator('#devices').innerText();
    if (!out.device_listed.includes(sim)) throw new Error(`device ${sim} not listed`);
    await button.first().click();
  } else {
    const [query, secs] = rest;
    seconds = Number(secs);
    await page.goto(`${base}/?${query}`);
  }
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    const s = await sample();
    if (s.t > 0 && !s.paused) break;
    await sleep(200);
  }
  out.startup_ms = Date.now() - t0;
  const start = Date.now();
  while (Date.now() - start < seconds * 1000) {
    const s = await sample();
    out.samples.push(s);
    if (s.ended) break;
    await sleep(500);
  }
  out.overlay = await page.locator('#overlay').innerText().catch(() => '');
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
