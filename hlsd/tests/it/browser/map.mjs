// The page's map against a running hlsd (see browser.rs):
//   node map.mjs <base-url> <sim> [screenshot.png]
// opens the page on the device, waits until the map's base layer is drawn (outlines decoded,
// or every tile loaded or failed), and reports what the page says it drew (window.hlsdMap)
// beside what the browser itself finds under the track's first and last fixes
// (elementsFromPoint: the country path or the tile image there), the incident markers, the graticule labels, the scale
// bar and the attribution.
// Prints one JSON object on stdout; the Rust test judges it.
import { sleep, withPage } from './chromium.mjs';

const [base, sim, shot] = process.argv.slice(2);
const out = { console: [] };

await withPage({ width: 1440, height: 960 }, async (page, errors) => {
  out.console = errors;
  await page.goto(`${base}/?sim=${sim}`);
  const t0 = Date.now();
  let map = null;
  while (Date.now() - t0 < 30000) {
    map = await page.evaluate(() => JSON.parse(JSON.stringify(window.hlsdMap || null)));
    const t = map && map.tiles;
    const tilesDone = map && map.layer === 'tiles' && t.wanted > 0 && t.loaded + t.failed === t.wanted;
    // A failed tile set is done once the outlines went under it.
    if (tilesDone && (t.failed === 0 || map.countries > 0)) break;
    if (map && map.layer === 'outlines' && map.countries > 0) break;
    await sleep(200);
  }
  out.map = map;
  out.wait_ms = Date.now() - t0;
  await page.locator('#track').scrollIntoViewIfNeeded();
  Object.assign(out, await page.evaluate(() => {
    const at = (id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return document.elementsFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    };
    const under = at('track-start');
    const countries = (els) => els.filter((e) => e.matches('path.country')).map((e) => e.getAttribute('data-name'));
    const texts = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
    return {
      start_on_screen: document.getElementById('track-start').getBoundingClientRect().width > 0,
      countries_under_start: countries(under),
      countries_under_end: countries(at('track-end')),
      tile_under_start: (under.find((e) => e.tagName === 'image') || { getAttribute: () => null }).getAttribute('href'),
      incident_marks: document.querySelectorAll('#incident-marks .inc-mark').length,
      graticule: texts('#graticule text'),
      scale: texts('#map-scale text'),
      attribution: document.getElementById('map-attr').textContent,
      images: [...document.querySelectorAll('#map-base image')].map((i) => i.getAttribute('href')),
    };
  }));
  if (shot) await page.locator('#track').screenshot({ path: shot });
});
console.log(JSON.stringify(out));
