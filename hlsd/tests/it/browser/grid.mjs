// The operator's way in and out, against the real daemons (see e2e/mod.rs):
//   node grid.mjs <base-url> <name> <password> <stream,stream> <stop-stream> [screenshot.png]
// opens the page (the login form is all it shows), logs in, opens the live grid of the given
// channels (the page asks each device to stream: watch), waits until every tile plays, takes a
// screenshot, clicks the Stop button of <stop-stream>'s tile, then closes the browser (the Rust
// test then waits for the automatic 0x9102 of the channels left).
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { sleep, withPage } from './chromium.mjs';

const [base, name, password, streams, stopStream, shot] = process.argv.slice(2);
const out = { console: [] };

const tiles = (page) => page.evaluate(() => (window.hlsdGrid || []).map((t) => ({
  stream: t.stream, state: t.state, t: t.video.currentTime, paused: t.video.paused,
  w: t.video.videoWidth, h: t.video.videoHeight, frags: t.frags, error: t.error,
})));

await withPage({ width: 1440, height: 1000 }, async (page, errors) => {
  out.console = errors;
  await page.goto(`${base}/?grid=${streams}`);
  await page.locator('#login-form').waitFor({ state: 'visible', timeout: 15000 });
  out.login_shown = true;
  // Before logging in the page has loaded nothing: no device, no stream.
  out.devices_before_login = await page.locator('#devices li:not(.empty)').count();
  await page.fill('#login-name', name);
  await page.fill('#login-password', 'not-the-password');
  await page.click('#login-submit');
  await page.locator('#login-error').filter({ hasText: 'Wrong' }).waitFor({ timeout: 10000 });
  out.wrong_password_refused = true;
  await page.fill('#login-password', password);
  await Promise.all([page.waitForNavigation(), page.click('#login-submit')]);
  await page.locator('#who').filter({ hasText: name }).waitFor({ timeout: 15000 });
  out.who = await page.locator('#who').innerText();
  out.login_hidden = await page.locator('#login').isHidden();

  const want = streams.split(',');
  const t0 = Date.now();
  let last = [];
  while (Date.now() - t0 < 60000) {
    last = await tiles(page);
    if (last.length === want.length && last.every((t) => t.t > 3 && !t.paused)) break;
    await sleep(300);
  }
  out.startup_ms = Date.now() - t0;
  out.playing = last;
  if (shot) await page.screenshot({ path: shot, fullPage: true });

  await page.locator(`.tile[data-stream="${stopStream}"] button`, { hasText: 'Stop' }).click();
  const s0 = Date.now();
  while (Date.now() - s0 < 15000) {
    last = await tiles(page);
    if (last.find((t) => t.stream === stopStream)?.state === 'stopped') break;
    await sleep(200);
  }
  out.after_stop = last;
  // A few seconds more: the other tile keeps playing.
  await sleep(3000);
  out.after_stop_later = await tiles(page);
});
out.closed_at_ms = Date.now();
console.log(JSON.stringify(out));
