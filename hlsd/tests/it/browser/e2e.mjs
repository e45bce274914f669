// The operator page against the real daemons (see e2e/mod.rs). Two modes:
//   node e2e.mjs <base-url> watch <sim> <channel> <seconds>
//       opens the page, clicks the device's "Watch ch <channel>" button (the page POSTs the
//       watch to hlsd, which asks ingestd, which sends 0x9101 to the terminal), then samples
//       the player for <seconds> once it plays;
//   node e2e.mjs <base-url> play <query> <seconds>
//       opens `/?<query>` (e.g. `sim=...&session=...`) and samples the player until it ends
//       or <seconds> pass.
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { sample, sleep, withPage } from './chromium.mjs';

const [base, mode, ...rest] = process.argv.slice(2);
const out = { samples: [], console: [] };

await withPage({ width: 1280, height: 800 }, async (page, errors) => {
  out.console = errors;
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
    const s = await sample(page);
    if (s.t > 0 && !s.paused) break;
    await sleep(200);
  }
  out.startup_ms = Date.now() - t0;
  const start = Date.now();
  while (Date.now() - start < seconds * 1000) {
    const s = await sample(page);
    out.samples.push(s);
    if (s.ended) break;
    await sleep(500);
  }
  out.overlay = await page.locator('#overlay').innerText().catch(() => '');
});
console.log(JSON.stringify(out));
