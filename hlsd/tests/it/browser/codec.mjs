// What the page shows for a stream whose video the browser may not decode (H.265): after
// <seconds>, whether MSE says it can decode the codec hls.js found, what the player overlay and
// status say, and how far playback got.
// Usage: node codec.mjs <page-url> <seconds>
// Prints one JSON object; the Rust test judges it.
import { sample, sleep, withPage } from './chromium.mjs';

const [url, secs] = process.argv.slice(2);
const out = await withPage({ width: 1280, height: 800 }, async (page, errors) => {
  await page.goto(url);
  await sleep(Number(secs) * 1000);
  const s = await sample(page);
  return {
    ...s,
    errors,
    unsupported: await page.evaluate(() => window.hlsdState.unsupportedCodec),
    overlay: await page.evaluate(() => document.getElementById('overlay').textContent),
    status: await page.evaluate(() => document.getElementById('status').textContent),
    // What this browser says of HEVC Main at level 2 (the fixture's), for the test's verdict.
    hevc_supported: await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L60.90"')),
  };
});
console.log(JSON.stringify(out));
