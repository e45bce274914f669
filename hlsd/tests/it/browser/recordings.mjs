// The device view against the real daemons and a device with recordings on its card (see
// `page_plays_a_recording_from_the_device` in browser.rs): opens the page, picks the device
// (the view opens on today and asks the device), reads the timeline's bars, goes to <other-day>
// with the date picker and back with "Today", clicks the device recording that starts at
// <click-start-ms>, samples the player while the upload runs (pausing and resuming it with the
// playback controls) until the video ends, waits for the upload in the "recorded here" row,
// then screenshots the page.
// Usage: node recordings.mjs <base-url> <sim> <other-day YYYY-MM-DD> <click-start-ms> <screenshot.png>
// Prints one JSON object with the observations on stdout; the Rust test judges them.
import { sample, sleep, withPage } from './chromium.mjs';

const [base, sim, otherDay, clickStart, shot] = process.argv.slice(2);
const out = { samples: [], console: [] };

// Polls `probe` in the page until it returns something truthy; throws after `ms`.
async function until(page, what, ms, probe, arg) {
  const t0 = Date.now();
  for (;;) {
    const v = await page.evaluate(probe, arg);
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

// The timeline once the device answered (or failed to) for a view newer than `after`.
const timelineAfter = (after) => {
  const t = window.hlsdState.timeline;
  return t && t.token > after && t.asked && !t.busy && (t.recordings !== null || t.error) ? t : null;
};

// What the page shows of one day: the status line and every bar with its tooltip.
const readTimeline = () => ({
  day_input: document.getElementById('dv-day').value,
  status: document.getElementById('dv-status').textContent,
  device_bars: [...document.querySelectorAll('#timeline .tl-bar.dev')].map((b) => ({
    channel: Number(b.dataset.channel), start_ms: Number(b.dataset.start), end_ms: Number(b.dataset.end),
    alarm: Number(b.dataset.alarm), alarm_marked: b.classList.contains('alarm'), title: b.title,
    width_px: b.getBoundingClientRect().width,
    row_channel: Number(b.parentElement.dataset.channel),
  })),
  here_bars: [...document.querySelectorAll('#timeline .tl-bar.here')].map((b) => ({
    kind: b.dataset.kind, id: b.dataset.id, channel: Number(b.parentElement.dataset.channel), title: b.title,
    start_ms: Number(b.dataset.start), end_ms: Number(b.dataset.end),
  })),
  rows: [...document.querySelectorAll('#timeline .tl-label')].map((l) => l.textContent),
});

const player = (page) => page.evaluate(() => {
  const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
  const p = window.hlsdState;
  return { endlist: p.endlist, kind: p.kind, frames: q.totalVideoFrames || 0, duration: v.duration,
    rate: v.playbackRate, pb_state: document.getElementById('pb-state').textContent,
    controls_visible: !document.getElementById('pb-controls').classList.contains('hidden') };
});

await withPage({ width: 1440, height: 1000 }, async (page, errors) => {
  out.console = errors;
  await page.goto(`${base}/`);
  const li = page.locator(`#devices li[data-sim="${sim}"]`);
  await li.waitFor({ timeout: 20000 });
  await li.click();
  out.today = await until(page, 'the view of today', 20000, timelineAfter, 0);
  out.today_view = await page.evaluate(readTimeline);

  await page.fill('#dv-day', otherDay);
  out.other = await until(page, `the view of ${otherDay}`, 20000, timelineAfter, out.today.token);
  out.other_view = await page.evaluate(readTimeline);
  await page.click('#dv-today');
  out.back = await until(page, 'the view of today again', 20000, timelineAfter, out.other.token);

  await page.click(`#timeline .tl-bar.dev[data-start="${clickStart}"]`);
  out.detail = await page.locator('#dv-detail').innerText();
  const t0 = Date.now();
  let first = null;
  while (Date.now() - t0 < 40000) {
    const s = await sample(page);
    if (s.t > 0 && !s.paused) { first = { ...s, ...await player(page) }; break; }
    await sleep(100);
  }
  out.startup_ms = Date.now() - t0;
  out.first = first;
  if (!first) throw new Error(`playback did not start: ${JSON.stringify({ ...await sample(page), ...await player(page) })}`);
  out.playback = await page.evaluate(() => window.hlsdState.playback);

  // Pause and resume the upload (and the picture) with the page's controls.
  while ((await sample(page)).t < 1.5) await sleep(100);
  await page.click('#pb-pause');
  await until(page, 'the pause acknowledged', 10000, () => window.hlsdState.control.length >= 1);
  const p0 = { ...await sample(page), ...await player(page) };
  await sleep(1500);
  const p1 = { ...await sample(page), ...await player(page) };
  out.pause = { before: p0, after: p1 };
  await page.click('#pb-resume');
  await until(page, 'the resume acknowledged', 10000, () => window.hlsdState.control.length >= 2);

  const s0 = Date.now();
  let last = null;
  while (Date.now() - s0 < 60000) {
    last = { ...await sample(page), ...await player(page) };
    out.samples.push(last);
    if (last.ended) break;
    await sleep(250);
  }
  out.last = last;
  out.control = await page.evaluate(() => window.hlsdState.control);
  // The upload, now a session of ours, joins the "recorded here" row of the day.
  const h0 = Date.now();
  while (Date.now() - h0 < 10000) {
    if (await page.locator('#timeline .tl-bar.here.playback').count()) break;
    await sleep(250);
  }
  out.after = await page.evaluate(readTimeline);
  out.pb_mp4 = await page.evaluate(() => {
    const a = document.getElementById('pb-mp4');
    return a.classList.contains('hidden') ? null : a.getAttribute('href');
  });
  await page.screenshot({ path: shot, fullPage: true });
});
console.log(JSON.stringify(out));
