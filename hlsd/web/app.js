// hlsd operator page: devices and live streams, a player (hls.js, or the browser's own HLS),
// a device view (a day timeline of what the device holds on its SD card, asked with 0x9205,
// beside what we recorded ourselves; a click has the device upload a recording, 0x9201, which
// plays while it arrives, with pause/resume/stop/speed, 0x9202), the device's sessions and
// incidents (alarm names, whether their video could be fetched, VOD and MP4), and its GPS
// track with incident markers and a marker at the time of the picture on screen (from
// EXT-X-PROGRAM-DATE-TIME) over a base layer that needs no network (country outlines embedded
// in hlsd) or the deployment's own tile server, a live grid of several channels (2x2, 3x3) with stop buttons, and
// the login (a session cookie; nothing is shown before it unless hlsd allows anonymous
// access). No framework, no network beyond this server.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const video = $('video');
  const SVG_W = 600, SVG_H = 360, PAD = 26;
  const state = {
    devices: [], streams: [], sim: null, hls: null, frag: null, playing: null,
    positions: [], proj: null, tab: 'sessions', sessions: [], incidents: [], fixWindowMs: 120000,
    trackRange: null,
    // The device upload being played or controlled: {sim, ch, stream, playlist, start_ms,
    // end_ms, speed, paused, stopped, uploaded, session}.
    pb: null,
  };
  // The device view: one device, one day. `asked` is set once the operator opened the view:
  // the device is asked for its recordings (a 0x9205 over its mobile link) only then, not on
  // every page load or automatic selection.
  const dv = {
    sim: null, day: null, asked: false, recs: null, recsErr: null, recsBusy: false,
    sessions: [], sessErr: null, sessAt: 0, token: 0, selected: null,
  };
  // Readable from the console and by the browser test.
  const probe = window.hlsdState = {
    url: null, kind: null, errors: [], fatal: [], frags: 0, discontinuities: 0, lastCc: null,
    ended: false, endlist: false, pdt: null, marker: null, engine: null, playback: null, control: [],
  };

  // The names of the alarm bits, in one place. Bits 0-31: the alarm word of a 0x0200 position
  // (JT/T 808-2019 table 24, also the low word of a 0x1205 recording's flags); bits 32+: the
  // high word of a recording's 64-bit flags, the JT/T 1078-2016 video alarms (table 13).
  const ALARM_NAMES = new Map([
    [0, 'emergency'], [1, 'overspeed'], [2, 'fatigue driving'], [3, 'danger warning'],
    [4, 'GNSS module fault'], [5, 'GNSS antenna disconnected'], [6, 'GNSS antenna short circuit'],
    [7, 'main power undervoltage'], [8, 'main power off'], [9, 'display fault'], [10, 'TTS fault'],
    [11, 'camera fault'], [12, 'IC card reader fault'], [13, 'overspeed warning'], [14, 'fatigue warning'],
    [18, 'cumulative driving overtime'], [19, 'parking overtime'], [20, 'entering/leaving area'],
    [21, 'entering/leaving route'], [22, 'route driving time too short/long'], [23, 'route deviation'],
    [24, 'VSS fault'], [25, 'abnormal fuel'], [26, 'vehicle stolen'], [27, 'illegal ignition'],
    [28, 'illegal displacement'], [29, 'collision/rollover warning'], [30, 'rollover warning'],
    [31, 'illegal door opening'],
    [32, 'video signal loss'], [33, 'video signal blocked'], [34, 'storage fault'],
    [35, 'other video device fault'], [36, 'passenger overload'], [37, 'abnormal driving behaviour'],
    [38, 'special alarm recording threshold'],
  ]);
  // The set bits of an alarm value (a JSON number: exact up to bit 52, which covers every
  // named bit).
  function alarmBits(v) {
    const out = [];
    let n = Math.floor(Number(v) || 0);
    for (let b = 0; n > 0 && b < 64; b++, n = Math.floor(n / 2)) if (n % 2) out.push(b);
    return out;
  }
  const alarmNames = (v) => alarmBits(v).map((b) => ALARM_NAMES.get(b) || `reserved bit ${b}`);
  function alarmText(v) {
    const bits = alarmBits(v);
    if (!bits.length) return 'no alarm flags';
    const hex = `0x${Number(v).toString(16).padStart(8, '0')}`;
    return `alarm ${hex} (bit${bits.length > 1 ? 's' : ''} ${bits.join(', ')}): ${alarmNames(v).join(', ')}`;
  }
  const AV_TYPES = ['audio and video', 'audio', 'video', 'audio or video'];
  const STREAM_TYPES = ['any stream', 'main stream', 'sub stream'];
  const STORAGE_TYPES = ['any storage', 'main storage', 'backup storage'];
  // An incident's video_state as the operator reads it.
  const VIDEO_STATES = {
    recorded: 'video recorded live', requested: 'video asked of the device',
    uploading: 'video uploading from the device', fetched: 'video fetched from the device',
    waiting_online: 'video waits for the device to come online', failed: 'video could not be fetched',
  };

  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtTime(ms) {
    if (ms == null) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }
  function fmtDur(ms) {
    if (ms == null || ms < 0) return 'open';
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${pad2(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${pad2(Math.floor(s / 60) % 60)} min`;
  }
  const fmtClock = (ms) => fmtTime(ms).slice(11);
  function fmtSize(n) {
    if (n == null) return '—';
    if (n < 1024) return `${n} B`;
    const u = ['KiB', 'MiB', 'GiB'];
    let v = n / 1024, i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(v < 10 ? 1 : 0)} ${u[i]}`;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // A local calendar day 'YYYY-MM-DD' (the browser's time zone) and its [start, end) in ms:
  // 23 or 25 hours on a daylight-saving change.
  const dayOf = (d) => `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  function dayParts(day) { const [y, m, d] = day.split('-').map(Number); return [y, m - 1, d]; }
  function dayRange(day) {
    const [y, m, d] = dayParts(day);
    return [new Date(y, m, d).getTime(), new Date(y, m, d + 1).getTime()];
  }
  function shiftDay(day, n) { const [y, m, d] = dayParts(day); return dayOf(new Date(y, m, d + n)); }
  function ago(ms) {
    if (ms == null) return 'never';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return fmtTime(ms);
  }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  async function getJSON(url, opts) {
    const r = await fetch(url, opts);
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const e = new Error((body && body.error) || `${r.status} ${r.statusText}`);
      e.status = r.status;
      // The session ended (expired, logged out elsewhere, account disabled): log in again.
      if (r.status === 401) showLogin();
      throw e;
    }
    return body;
  }

  // ---- login -------------------------------------------------------------------------
  // Who the page acts as ({name, role, anonymous}), from /api/me.
  let me = null;
  function showLogin(message) {
    $('login').classList.remove('hidden');
    $('login-error').textContent = message || '';
    $('login-name').focus();
  }
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-submit').disabled = true;
    try {
      const r = await fetch('/api/login', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: $('login-name').value, password: $('login-password').value }),
      });
      if (!r.ok) {
        $('login-error').textContent = r.status === 401 ? 'Wrong name or password' : `Login failed (HTTP ${r.status})`;
        return;
      }
      location.reload();
    } finally {
      $('login-submit').disabled = false;
    }
  });
  $('logout').addEventListener('click', async () => {
    await fetch('/api/logout', { method: 'POST' });
    location.reload();
  });
  const mayCommand = () => me && (me.role === 'operator' || me.role === 'admin');
  const postJSON = (url, body) => getJSON(url, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  // An API error as the operator reads it: the server's reason, its status and what it means.
  const STATUS_MEANS = { 404: 'device offline', 409: 'busy', 502: 'refused or unreachable', 504: 'no answer in time' };
  function errText(e) {
    if (!e.status) return e.message;
    const means = STATUS_MEANS[e.status];
    return `${e.message} (HTTP ${e.status}${means && !e.message.includes(means) ? `, ${means}` : ''})`;
  }

  // ---- lists -------------------------------------------------------------------------
  async function refresh() {
    try {
      const [devices, streams] = await Promise.all([getJSON('/api/devices'), getJSON('/api/streams')]);
      state.devices = devices; state.streams = streams;
      renderDevices(); renderStreams();
      const online = devices.filter((d) => d.online).length;
      $('summary').textContent = `${devices.length} devices · ${online} online · ${streams.length} live`;
      // What we record today grows: re-read the day's sessions now and then (never the device).
      if (dv.sim && dv.day === dayOf(new Date()) && Date.now() - dv.sessAt > 15000) loadSessionsRow();
    } catch (e) {
      $('summary').textContent = `API unreachable: ${e.message}`;
    }
  }

  function liveStream(name) { return state.streams.find((s) => s.name === name && s.live); }

  function renderDevices() {
    const ul = $('devices');
    ul.replaceChildren();
    if (!state.devices.length) { ul.append(el('li', { class: 'empty' }, 'No devices yet')); return; }
    for (const d of state.devices) {
      const chans = el('div', { class: 'chans' });
      for (const ch of d.channels.length ? d.channels : [1]) {
        const name = `${d.sim}_${ch}`;
        const isLive = !!liveStream(name);
        chans.append(el('button', {
          type: 'button', class: isLive ? 'primary' : '', title: isLive ? `Play live ${name}` : `Ask the device to stream channel ${ch}`,
          onclick: (ev) => { ev.stopPropagation(); isLive ? playLive(name) : watch(d.sim, ch, ev.currentTarget); },
        }, isLive ? `▶ Ch ${ch}` : `Watch ch ${ch}`));
      }
      chans.append(el('button', {
        type: 'button', class: 'grid-btn', title: `All channels of ${d.plate || d.sim} in the live grid`,
        onclick: (ev) => { ev.stopPropagation(); openGrid((d.channels.length ? d.channels : [1]).map((c) => `${d.sim}_${c}`)); },
      }, '▦ Grid'));
      const pos = d.last_position;
      const li = el('li', { class: d.sim === state.sim ? 'selected' : '', title: 'Open the device view',
        'data-sim': d.sim, onclick: () => selectDevice(d.sim, null, true) },
        el('div', { class: 'row' },
          el('span', { class: 'name' }, el('span', { class: `dot ${d.online ? 'on' : ''}` }), d.sim),
          el('span', { class: 'sub' }, d.plate || '')),
        el('div', { class: 'sub' }, `${d.online ? 'online' : 'offline'} · seen ${ago(d.last_seen_ms)}` +
          (pos ? ` · ${pos.speed_kmh.toFixed(0)} km/h` : '')),
        pos ? el('div', { class: 'sub', title: `fix at ${fmtTime(pos.time_ms)}` },
          `${pos.lat.toFixed(5)}, ${pos.lon.toFixed(5)}`) : null,
        d.terminal ? el('div', { class: 'sub' }, `${d.terminal.maker_id} ${d.terminal.model}`) : null,
        chans);
      ul.append(li);
    }
  }

  function renderStreams() {
    const ul = $('streams');
    ul.replaceChildren();
    if (!state.streams.length) { ul.append(el('li', { class: 'empty' }, 'No live streams')); return; }
    for (const s of state.streams) {
      ul.append(el('li', { class: state.playing === s.url ? 'selected' : '', onclick: () => playLive(s.name) },
        el('div', { class: 'row' },
          el('span', { class: 'name' }, el('span', { class: 'dot live' }), s.name),
          el('span', { class: 'sub' }, `${Math.round(s.window_seconds)} s window`)),
        el('div', { class: 'sub' }, `updated ${ago(s.updated_ms)} · segment #${s.media_sequence + s.segments - 1}`)));
    }
  }

  // ---- device detail -----------------------------------------------------------------
  // `open`: the operator picked the device (rather than the page following a stream), so its
  // view opens and the device is asked for its recordings.
  async function selectDevice(sim, range, open) {
    const changed = state.sim !== sim;
    state.sim = sim;
    renderDevices();
    $('track-sim').textContent = sim;
    if (changed || open) openDeviceView(sim, !!open);
    const now = Date.now();
    const from = range ? range[0] : now - 7 * 86400000;
    const to = range ? range[1] : now + 60000;
    try {
      const [sessions, incidents] = await Promise.all([
        getJSON(`/api/devices/${sim}/sessions?from=${now - 30 * 86400000}`),
        getJSON(`/api/devices/${sim}/incidents?from=${now - 30 * 86400000}`),
      ]);
      if (state.sim !== sim) return;
      state.sessions = sessions; state.incidents = incidents;
      renderRecordings();
      if (dv.sim === sim) renderTimeline();
      if (changed || range) {
        state.trackRange = [from, to];
        state.positions = await getJSON(`/api/devices/${sim}/positions?from=${from}&to=${to}&limit=20000`);
      }
      drawTrack();
    } catch (e) {
      $('recordings').replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, `Could not load: ${errText(e)}`)));
    }
  }

  function renderRecordings() {
    const tb = $('recordings');
    tb.replaceChildren();
    const rows = state.tab === 'sessions' ? state.sessions : state.incidents;
    if (!rows.length) {
      tb.append(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, state.tab === 'sessions' ? 'No sessions' : 'No incidents')));
      return;
    }
    for (const r of rows) {
      const isSession = state.tab === 'sessions';
      const url = isSession ? `/vod/session/${r.id}/index.m3u8` : `/vod/incident/${r.id}/index.m3u8`;
      const what = isSession
        ? el('span', {}, el('span', { class: 'kind' }, r.kind), ` ch ${r.channel ?? '?'}`)
        : incidentWhat(r);
      const open = isSession ? r.ended_ms == null : incidentOpen(r);
      const actions = el('td', { class: 'actions' });
      if (isSession || incidentHasVideo(r)) {
        actions.append(el('button', { type: 'button', onclick: () => (isSession ? playSession(r) : playIncident(r)) }, 'Play'));
        actions.append(mp4Link(isSession ? 'session' : 'incident', r, open));
        actions.append(el('button', { type: 'button', class: 'share', title: 'A link that opens this recording (and nothing else) for 24 h, without a login',
          onclick: () => share(isSession ? { session: r.id } : { incident: r.id }) }, 'Share'));
      }
      tb.append(el('tr', { class: state.playing === url ? 'playing' : '', 'data-id': r.id },
        el('td', {}, fmtTime(r.started_ms)),
        el('td', {}, open ? 'open' : fmtDur(r.ended_ms == null ? null : r.ended_ms - r.started_ms)),
        el('td', {}, what),
        actions));
    }
  }

  // ---- incidents ---------------------------------------------------------------------
  const incidentOpen = (i) => i.open === true || i.ended_ms == null;
  // An incident without a video yet (asked of the device, waiting for it) or whose video could
  // not be fetched has nothing to play; older rows without a state have their recorded span.
  const incidentHasVideo = (i) => !['requested', 'waiting_online', 'failed'].includes(i.video_state);
  function incidentVideoText(i) {
    if (!i.video_state) return i.session_id ? 'video uploaded by the device' : '';
    if (i.video_state === 'failed') return `could not be fetched: ${i.video_reason || 'no reason given'}`;
    const t = VIDEO_STATES[i.video_state] || `video ${i.video_state}`;
    return i.video_reason ? `${t}: ${i.video_reason}` : t;
  }
  function incidentWhat(i) {
    const names = alarmNames(i.alarm);
    const video = incidentVideoText(i);
    return el('div', { class: 'incident' },
      el('div', {},
        el('span', { class: 'kind alarm', title: i.source || '' }, names.length ? names.join(', ') : i.kind),
        ` ch ${i.channel ?? 'all'}`,
        incidentOpen(i) ? el('span', { class: 'kind open' }, 'in progress') : null),
      video ? el('div', { class: `sub video-state ${i.video_state || ''}` }, video) : null);
  }
  // The MP4 download of a session (remuxed by hlsd from its segments), or of an incident: the
  // session of its upload when the device sent its video, else the clip of its channel's
  // stream over its span (a whole-device incident: the device's first channel).
  function mp4Href(kind, x) {
    if (kind === 'session') return `/vod/session/${encodeURIComponent(x.id)}/video.mp4`;
    if (x.session_id) return `/vod/session/${encodeURIComponent(x.session_id)}/video.mp4`;
    const dev = state.devices.find((d) => d.sim === x.sim);
    const ch = x.channel ?? (dev && dev.channels.length ? dev.channels[0] : 1);
    return `/api/streams/${x.sim}_${ch}/clip.mp4?from=${x.started_ms}&to=${x.ended_ms ?? Date.now()}`;
  }
  // A scoped, expiring link to one recording: hlsd mints a token for exactly it.
  async function share(what) {
    try {
      const t = await postJSON('/api/tokens', { ...what, ttl_secs: 86400 });
      const url = `${location.origin}${t.urls[0]}`;
      probe.shared = url;
      if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
      window.prompt(`Link valid until ${fmtTime(t.expires * 1000)} (copied when the browser allows):`, url);
    } catch (e) {
      setStatus(`share: ${errText(e)}`, true);
    }
  }
  function mp4Link(kind, x, open) {
    return el('a', {
      class: 'btn mp4', href: mp4Href(kind, x), download: '',
      title: open ? 'Still recording: the MP4 holds what is recorded so far' : 'Download as MP4',
    }, 'MP4');
  }

  function setTab(tab) {
    state.tab = tab;
    $('tab-sessions').classList.toggle('active', tab === 'sessions');
    $('tab-incidents').classList.toggle('active', tab === 'incidents');
    renderRecordings();
  }
  $('tab-sessions').addEventListener('click', () => setTab('sessions'));
  $('tab-incidents').addEventListener('click', () => setTab('incidents'));

  // ---- track -------------------------------------------------------------------------
  // Incidents with a position in the track's time range: markers on the map.
  function mappedIncidents() {
    const [from, to] = state.trackRange || [-Infinity, Infinity];
    return state.incidents.filter((i) => i.sim === state.sim && Number.isFinite(i.lat) && Number.isFinite(i.lon) &&
      i.started_ms >= from && i.started_ms <= to);
  }

  function drawTrack() {
    const pts = state.positions;
    const incs = mappedIncidents();
    const line = $('track-line');
    $('incident-marks').replaceChildren();
    $('track-empty').style.display = pts.length || incs.length ? 'none' : '';
    $('track-empty').textContent = state.sim ? 'No positions in this time range' : 'Select a device to see its track';
    if (!pts.length) {
      line.setAttribute('points', '');
      state.proj = null;
      for (const id of ['track-start', 'track-end']) { $(id).setAttribute('cx', -10); $(id).setAttribute('cy', -10); }
      $('track-info').textContent = '';
      if (!incs.length) { clearMap(); return; }
    }
    const view = fitView(pts.concat(incs));
    const proj = (lat, lon) => [(mercX(lon) - view.x0) * view.scale, (mercY(lat) - view.y0) * view.scale];
    drawMap(view);
    drawIncidentMarks(incs, proj);
    if (!pts.length) return;
    state.proj = proj;
    const step = Math.max(1, Math.floor(pts.length / 4000));
    const xy = [];
    for (let i = 0; i < pts.length; i += step) xy.push(state.proj(pts[i].lat, pts[i].lon));
    xy.push(state.proj(pts[pts.length - 1].lat, pts[pts.length - 1].lon));
    line.setAttribute('points', xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '));
    const [sx, sy] = xy[0], [ex, ey] = xy[xy.length - 1];
    $('track-start').setAttribute('cx', sx); $('track-start').setAttribute('cy', sy);
    $('track-end').setAttribute('cx', ex); $('track-end').setAttribute('cy', ey);
    $('track-info').textContent = `${pts.length} fixes · ${fmtTime(pts[0].time_ms)} → ${fmtTime(pts[pts.length - 1].time_ms).slice(11)}`;
    updateMarker();
  }

  // ---- map base layer -------------------------------------------------------------------
  // Web Mercator in world units (0..1 both ways, y down): the projection of web map tiles, so
  // tiles, the country outlines, the track and the markers line up. The base layer is either
  // the raster tiles of hlsd's --map-tile-url or, by default, Natural Earth country outlines
  // embedded in hlsd (world-atlas; 1:10m once the view is narrower than DETAIL_BELOW_DEG), so
  // the map works with no network beyond this server.
  const MAX_LAT = 85.05112878, MAX_ZOOM = 19, DETAIL_BELOW_DEG = 30;
  // The narrowest view, in world units: about 300 m at the equator, so one fix is not a dot
  // zoomed in to nothing.
  const MIN_SPAN = 1 / 2 ** 17;
  const mercX = (lon) => (lon + 180) / 360;
  const mercY = (lat) => {
    const s = Math.sin(Math.max(-MAX_LAT, Math.min(MAX_LAT, lat)) * Math.PI / 180);
    return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
  };
  const lonOf = (x) => x * 360 - 180;
  const latOf = (y) => Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180 / Math.PI;
  // What the map shows, for the console and the browser test.
  const mapProbe = window.hlsdMap = {
    layer: null, detail: null, countries: 0, view: null, error: null,
    tiles: { z: null, wanted: 0, loaded: 0, failed: 0, urls: [] }, drawn: 0,
  };
  let mapToken = 0, mapKey = null;

  // The view that fits `pts` (with lat/lon) into the SVG with PAD around: its top-left corner
  // in world units and its scale in SVG units per world unit.
  function fitView(pts) {
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (const p of pts) {
      const x = mercX(p.lon), y = mercY(p.lat);
      minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
    }
    const w = Math.max(maxX - minX, MIN_SPAN), h = Math.max(maxY - minY, MIN_SPAN);
    const scale = Math.min((SVG_W - 2 * PAD) / w, (SVG_H - 2 * PAD) / h);
    return { x0: (minX + maxX) / 2 - SVG_W / 2 / scale, y0: (minY + maxY) / 2 - SVG_H / 2 / scale, scale };
  }

  function clearMap() {
    mapToken++;
    for (const id of ['map-base', 'graticule', 'map-scale']) $(id).replaceChildren();
    $('map-attr').textContent = '';
    mapKey = null;
    Object.assign(mapProbe, { layer: null, detail: null, countries: 0, view: null });
  }

  function drawMap(view) {
    const tileUrl = me && me.map && me.map.tile_url;
    // The same view again (a device re-selected, new incidents): the base layer stays.
    const key = `${view.x0} ${view.y0} ${view.scale} ${tileUrl}`;
    if (key === mapKey) return;
    mapKey = key;
    const token = ++mapToken;
    mapProbe.view = view;
    drawGraticule(view);
    drawScaleBar(view);
    $('map-attr').textContent = tileUrl ? (me.map.attribution || '') : 'Natural Earth';
    if (tileUrl) drawTiles(view, tileUrl, token);
    else drawOutlines(view, token);
  }

  function drawTiles(view, template, token) {
    const g = $('map-base');
    g.replaceChildren();
    // The zoom whose tiles are at least as fine as the view (never upscaled, at most 2x down).
    const z = Math.max(0, Math.min(MAX_ZOOM, Math.ceil(Math.log2(view.scale / 256))));
    const n = 2 ** z, size = view.scale / n;
    const x1 = view.x0 + SVG_W / view.scale, y1 = view.y0 + SVG_H / view.scale;
    const t = mapProbe.tiles = { z, wanted: 0, loaded: 0, failed: 0, urls: [] };
    Object.assign(mapProbe, { layer: 'tiles', detail: null, countries: 0 });
    let fellBack = false;
    for (let ty = Math.max(0, Math.floor(view.y0 * n)); ty <= Math.min(n - 1, Math.floor(y1 * n)); ty++) {
      for (let tx = Math.floor(view.x0 * n); tx <= Math.floor(x1 * n); tx++) {
        const url = template.replace('{z}', z).replace('{x}', ((tx % n) + n) % n).replace('{y}', ty);
        // Half a unit of overlap hides the hairline seams between neighbouring tiles.
        const img = svgEl('image', {
          href: url, x: ((tx / n - view.x0) * view.scale).toFixed(2), y: ((ty / n - view.y0) * view.scale).toFixed(2),
          width: (size + 0.5).toFixed(2), height: (size + 0.5).toFixed(2), preserveAspectRatio: 'none',
        });
        img.addEventListener('load', () => { if (token === mapToken) t.loaded++; });
        img.addEventListener('error', () => {
          if (token !== mapToken) return;
          t.failed++;
          // A tile server that cannot be reached must not leave the map blank: the embedded
          // outlines go under whatever tiles did load.
          if (!fellBack) { fellBack = true; drawOutlines(view, token, true); }
        });
        t.wanted++; t.urls.push(url);
        g.append(img);
      }
    }
  }

  // The country outlines at `detail` ('50m' or '10m'), decoded once: per country its name, its
  // rings in world units and their bounding box.
  const atlas = new Map();
  function loadAtlas(detail) {
    if (!atlas.has(detail)) {
      atlas.set(detail, fetch(`/static/countries-${detail}.json`).then((r) => {
        if (!r.ok) throw new Error(`countries-${detail}.json: HTTP ${r.status}`);
        return r.json();
      }).then((topo) => window.topojson.feature(topo, topo.objects.countries).features.map((f) => {
        const polys = !f.geometry ? [] : f.geometry.type === 'Polygon' ? [f.geometry.coordinates] : f.geometry.coordinates;
        const rings = [];
        let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
        for (const poly of polys) {
          for (const ring of poly) {
            const r = new Float64Array(ring.length * 2);
            ring.forEach(([lon, lat], i) => {
              const x = r[2 * i] = mercX(lon), y = r[2 * i + 1] = mercY(lat);
              minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
            });
            rings.push(r);
          }
        }
        return { name: (f.properties && f.properties.name) || '', rings, box: [minX, minY, maxX, maxY] };
      })).catch((e) => { atlas.delete(detail); throw e; }));
    }
    return atlas.get(detail);
  }

  async function drawOutlines(view, token, under) {
    const widthDeg = (SVG_W / view.scale) * 360;
    const detail = widthDeg < DETAIL_BELOW_DEG ? '10m' : '50m';
    let countries;
    try {
      countries = await loadAtlas(detail);
    } catch (e) {
      // Drawn again (and fetched again) at the next redraw.
      if (token === mapToken) { mapProbe.error = String(e); mapKey = null; }
      return;
    }
    if (token !== mapToken) return;
    // Clipped to the view with a margin, so the path stays small and its coordinates near the
    // view (a 1:10m country at street scale spans millions of units, beyond float precision).
    const m = 20 / view.scale;
    const box = [view.x0 - m, view.y0 - m, view.x0 + SVG_W / view.scale + m, view.y0 + SVG_H / view.scale + m];
    const g = $('map-base');
    const layer = svgEl('g', { class: 'countries' });
    let drawn = 0;
    for (const c of countries) {
      if (c.box[2] < box[0] || c.box[0] > box[2] || c.box[3] < box[1] || c.box[1] > box[3]) continue;
      let d = '';
      for (const ring of c.rings) {
        const clipped = clipRing(ring, box);
        if (clipped.length < 6) continue;
        d += 'M';
        for (let i = 0; i < clipped.length; i += 2) {
          d += `${((clipped[i] - view.x0) * view.scale).toFixed(1)},${((clipped[i + 1] - view.y0) * view.scale).toFixed(1)} `;
        }
        d += 'Z';
      }
      if (!d) continue;
      const path = svgEl('path', { d, class: 'country', 'data-name': c.name });
      const title = svgEl('title', {});
      title.textContent = c.name;
      path.append(title);
      layer.append(path);
      drawn++;
    }
    if (under) g.prepend(layer); else g.replaceChildren(layer);
    Object.assign(mapProbe, { detail, countries: drawn, drawn: mapProbe.drawn + 1 });
    if (!under) mapProbe.layer = 'outlines';
  }

  // Sutherland-Hodgman: the ring (flat [x, y, ...]) clipped to the box [x0, y0, x1, y1]. Edges
  // along the box are fine: the box is outside the visible area.
  function clipRing(ring, box) {
    let pts = ring;
    const edges = [
      (x, y) => x >= box[0], (x, y) => y >= box[1], (x, y) => x <= box[2], (x, y) => y <= box[3],
    ];
    const cross = [
      (ax, ay, bx, by) => [box[0], ay + (by - ay) * (box[0] - ax) / (bx - ax)],
      (ax, ay, bx, by) => [ax + (bx - ax) * (box[1] - ay) / (by - ay), box[1]],
      (ax, ay, bx, by) => [box[2], ay + (by - ay) * (box[2] - ax) / (bx - ax)],
      (ax, ay, bx, by) => [ax + (bx - ax) * (box[3] - ay) / (by - ay), box[3]],
    ];
    for (let e = 0; e < 4 && pts.length; e++) {
      const inside = edges[e], at = cross[e], out = [];
      const n = pts.length;
      for (let i = 0; i < n; i += 2) {
        const ax = pts[(i - 2 + n) % n], ay = pts[(i - 1 + n) % n], bx = pts[i], by = pts[i + 1];
        const ain = inside(ax, ay), bin = inside(bx, by);
        if (bin) {
          if (!ain) out.push(...at(ax, ay, bx, by));
          out.push(bx, by);
        } else if (ain) {
          out.push(...at(ax, ay, bx, by));
        }
      }
      pts = out;
    }
    return pts;
  }

  // Parallels and meridians every "round" step (about five across), labelled at the edges.
  function drawGraticule(view) {
    const g = $('graticule');
    g.replaceChildren();
    const west = lonOf(view.x0), east = lonOf(view.x0 + SVG_W / view.scale);
    const north = latOf(view.y0), south = latOf(view.y0 + SVG_H / view.scale);
    const steps = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30];
    const step = steps.find((s) => (east - west) / s <= 6) || 60;
    const digits = Math.max(0, Math.ceil(-Math.log10(step)));
    const label = (v, pos, neg) => `${Math.abs(v).toFixed(digits)}°${v >= 0 ? pos : neg}`;
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      const x = (mercX(lon) - view.x0) * view.scale;
      g.append(svgLine(x, 0, x, SVG_H));
      // Labels clear of the latitudes' corner.
      if (x < 56) continue;
      const t = svgEl('text', { x: x + 3, y: 11 });
      t.textContent = label(lon, 'E', 'W');
      g.append(t);
    }
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      const y = (mercY(lat) - view.y0) * view.scale;
      g.append(svgLine(0, y, SVG_W, y));
      // Labels clear of the longitudes' row and of the scale bar.
      if (y < 24 || y > SVG_H - 28) continue;
      const t = svgEl('text', { x: 3, y: y - 3 });
      t.textContent = label(lat, 'N', 'S');
      g.append(t);
    }
  }

  // A bar of a round length (1, 2 or 5 × 10^k m) about 100 units long, at the view's middle
  // latitude (Mercator stretches with latitude).
  function drawScaleBar(view) {
    const g = $('map-scale');
    g.replaceChildren();
    const lat = latOf(view.y0 + SVG_H / 2 / view.scale);
    const metresPerUnit = 40075016.686 * Math.cos(lat * Math.PI / 180) / view.scale;
    const raw = 100 * metresPerUnit;
    const pow = 10 ** Math.floor(Math.log10(raw));
    const nice = [5, 2, 1].map((k) => k * pow).find((v) => v <= raw);
    const len = nice / metresPerUnit;
    const x = 10, y = SVG_H - 12;
    const t = svgEl('text', { x, y: y - 5 });
    t.textContent = nice >= 1000 ? `${nice / 1000} km` : `${nice} m`;
    g.append(svgEl('path', { d: `M${x},${y - 4} V${y} H${(x + len).toFixed(1)} V${y - 4}` }), t);
  }

  function drawIncidentMarks(incs, proj) {
    const g = $('incident-marks');
    for (const i of incs) {
      const [x, y] = proj(i.lat, i.lon);
      const names = alarmNames(i.alarm);
      const m = svgEl('g', { class: `inc-mark${state.playing === `/vod/incident/${i.id}/index.m3u8` ? ' active' : ''}`,
        transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`, 'data-id': i.id });
      const title = svgEl('title', {});
      title.textContent = `${names.length ? names.join(', ') : i.kind} · ${fmtTime(i.started_ms)}` +
        (incidentVideoText(i) ? `\n${incidentVideoText(i)}` : '');
      const label = svgEl('text', { y: 4, 'text-anchor': 'middle' });
      label.textContent = '!';
      m.append(title, svgEl('path', { d: 'M0,-11 L10,7 L-10,7 Z' }), label);
      if (incidentHasVideo(i)) m.addEventListener('click', () => playIncident(i));
      g.append(m);
    }
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }
  function svgLine(x1, y1, x2, y2) {
    const l = document.createElementNS('http://www.w3.org/2000/svg', 'line');
    l.setAttribute('x1', x1); l.setAttribute('y1', y1); l.setAttribute('x2', x2); l.setAttribute('y2', y2);
    return l;
  }

  // The position at time t: binary search, then linear interpolation between the two fixes.
  function positionAt(t) {
    const pts = state.positions;
    if (!pts.length) return null;
    let lo = 0, hi = pts.length - 1;
    if (t <= pts[0].time_ms) return { ...pts[0], gap: pts[0].time_ms - t };
    if (t >= pts[hi].time_ms) return { ...pts[hi], gap: t - pts[hi].time_ms };
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (pts[mid].time_ms <= t) lo = mid; else hi = mid;
    }
    const a = pts[lo], b = pts[hi];
    const f = (t - a.time_ms) / Math.max(1, b.time_ms - a.time_ms);
    return { ...a, lat: a.lat + (b.lat - a.lat) * f, lon: a.lon + (b.lon - a.lon) * f, time_ms: t, gap: Math.min(t - a.time_ms, b.time_ms - t) };
  }

  function updateMarker() {
    const t = currentPdt();
    probe.pdt = t;
    updatePlayhead(t);
    $('pdt').textContent = t ? `picture time ${fmtTime(t)}.${String(Math.floor(t % 1000)).padStart(3, '0')}` : '';
    const m = $('marker');
    const p = t != null && state.proj ? positionAt(t) : null;
    if (!p || p.gap > state.fixWindowMs) {
      m.setAttribute('transform', 'translate(-100,-100)');
      probe.marker = null;
      $('position').textContent = p ? `no fix within ${state.fixWindowMs / 1000} s of the picture` : '';
      return;
    }
    const [x, y] = state.proj(p.lat, p.lon);
    m.setAttribute('transform', `translate(${x.toFixed(1)},${y.toFixed(1)})`);
    probe.marker = { x, y, lat: p.lat, lon: p.lon, t };
    $('position').textContent = `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)} · ${(p.speed_kmh || 0).toFixed(0)} km/h · heading ${p.heading || 0}°`;
  }

  // ---- player ------------------------------------------------------------------------
  function currentPdt() {
    if (!state.playing) return null;
    if (state.hls) {
      const d = state.hls.playingDate;
      if (d && !isNaN(d.getTime())) return d.getTime();
      const f = state.frag;
      if (f && f.programDateTime) return f.programDateTime + (video.currentTime - f.start) * 1000;
      return null;
    }
    // Native HLS: the playlist's first PROGRAM-DATE-TIME maps to currentTime 0.
    if (typeof video.getStartDate === 'function') {
      const s = video.getStartDate().getTime();
      if (!isNaN(s)) return s + video.currentTime * 1000;
    }
    return null;
  }

  function overlay(text) {
    const o = $('overlay');
    o.textContent = text || '';
    o.classList.toggle('hidden', !text);
  }
  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('error', !!isError);
  }

  // kind: 'live' (join at the live edge), 'event' (a recording still growing), 'vod', or
  // 'playback' (a device upload: a live playlist that grows from the start of the recording
  // and ends with ENDLIST; watched from its start).
  // Low-Latency HLS: the live rendition with parts (ll.m3u8) beside index.m3u8, same query.
  const llUrlOf = (url) => url.replace(/\/index\.m3u8(\?|$)/, '/ll.m3u8$1');
  // Latency samples (ms): now minus the program date-time on screen, one a second while live.
  window.__latency = [];
  window.__playing_ll = false;
  setInterval(() => {
    const hls = state.hls;
    const el = $('latency');
    if (!hls || probe.kind !== 'live' || !hls.playingDate || video.paused) { el.textContent = ''; return; }
    // hls.js catches up with its target latency (PART-HOLD-BACK) only by playing faster with
    // more than a second buffered, which a low-latency player never has: the latency it
    // started with (the target plus the time to start) would stay. Playing 10 % faster while
    // more than a quarter second behind the target takes it there without a seek.
    if (probe.lowLatency && hls.targetLatency && !video.seeking) {
      const behind = hls.latency - hls.targetLatency;
      const rate = behind > 0.25 ? 1.1 : behind < 0.05 ? 1 : video.playbackRate;
      if (video.playbackRate !== rate) {
        video.playbackRate = rate;
        if (rate > 1) probe.catchUps++;
      }
    }
    const ms = Date.now() - hls.playingDate.getTime();
    window.__latency.push(ms);
    if (window.__latency.length > 3600) window.__latency.shift();
    el.textContent = `${probe.lowLatency ? 'LL · ' : ''}latency ${(ms / 1000).toFixed(2)} s`;
  }, 1000);

  function play(url, kind, title, startAt) {
    if (state.hls) { state.hls.destroy(); state.hls = null; }
    const lowLatency = kind === 'live' && /\/ll\.m3u8(\?|$)/.test(url);
    window.__playing_ll = lowLatency;
    window.__latency = [];
    state.frag = null;
    state.playing = url;
    $('player-card').classList.remove('hidden');
    state.playingLive = kind === 'live' ? title : null;
    renderStopLive();
    Object.assign(probe, { url, kind, lowLatency, catchUps: 0, unsupportedCodec: null, errors: [], fatal: [], frags: 0, discontinuities: 0, lastCc: null, ended: false, endlist: false });
    const badge = $('badge');
    badge.textContent = { live: 'LIVE', event: 'RECORDING', playback: 'FROM DEVICE' }[kind] || 'VOD';
    badge.className = `badge ${kind === 'live' ? 'live' : kind === 'playback' ? 'device' : 'vod'}`;
    $('title').textContent = title;
    overlay('');
    video.playbackRate = state.pb && state.pb.playlist === url ? state.pb.speed : 1;
    renderStreams(); renderRecordings(); renderPb();
    if (dv.sim) renderTimeline();
    if (window.Hls && window.Hls.isSupported()) {
      probe.engine = 'hls.js';
      // Low latency: hls.js starts PART-HOLD-BACK (three parts) from the live edge; the page
      // plays slightly faster to get back there after the start or a stall.
      const hls = new window.Hls(lowLatency
        ? {
          // maxLiveSyncPlaybackRate 1: hls.js leaves the rate alone (see the catch-up above).
          lowLatencyMode: true, maxLiveSyncPlaybackRate: 1, backBufferLength: 30,
          // No retry of a first load that fails: the classic playlist is the fallback. The
          // first answer may take a segment or two: a stream starts its parts on demand.
          manifestLoadPolicy: { default: {
            maxTimeToFirstByteMs: 30000, maxLoadTimeMs: 40000,
            timeoutRetry: { maxNumRetry: 0, retryDelayMs: 0, maxRetryDelayMs: 0 },
            errorRetry: { maxNumRetry: 0, retryDelayMs: 0, maxRetryDelayMs: 0 },
          } },
        }
        : {
          liveSyncDurationCount: 3, maxBufferLength: 30, backBufferLength: 60,
          startPosition: kind === 'playback' ? startAt || 0 : -1,
        });
      state.hls = hls;
      // A playlist without ENDLIST that gains it: the upload (or the recording) is complete.
      hls.on(window.Hls.Events.LEVEL_LOADED, (_e, d) => {
        if (d.details.live || probe.endlist) return;
        probe.endlist = true;
        if (state.pb && state.pb.playlist === url) uploadComplete(state.pb);
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => { video.play().catch(() => overlay('Click play to start')); });
      // H.265 needs a decoder Chromium only has where the platform provides
      // one: say so instead of showing a black box (the stream is fine).
      hls.on(window.Hls.Events.BUFFER_CODECS, (_e, d) => {
        const codec = d.video && (d.video.codec || '');
        if (codec && /^(hvc1|hev1)/.test(codec) && !window.MediaSource.isTypeSupported(`video/mp4; codecs="${codec}"`)) {
          probe.unsupportedCodec = codec;
          overlay('H.265 (HEVC) video: this browser has no decoder for it. The stream is fine; ' +
            'play it in a browser with H.265 support (Safari, or Chrome/Edge with hardware decoding).');
          setStatus(`cannot decode ${codec} here`, true);
        }
      });
      hls.on(window.Hls.Events.FRAG_CHANGED, (_e, d) => {
        const f = d.frag;
        probe.frags++;
        if (probe.lastCc !== null && f.cc !== probe.lastCc) probe.discontinuities++;
        probe.lastCc = f.cc;
        state.frag = f;
        setStatus(`segment #${f.sn} · ${f.duration.toFixed(2)} s · discontinuity ${f.cc} · ` +
          `${video.videoWidth}×${video.videoHeight}` + (f.programDateTime ? ` · PDT ${fmtTime(f.programDateTime)}` : ''));
      });
      hls.on(window.Hls.Events.ERROR, (_e, d) => {
        const rec = { type: d.type, details: d.details, fatal: !!d.fatal, at: video.currentTime };
        probe.errors.push(rec);
        if (!d.fatal) return;
        probe.fatal.push(rec);
        if (probe.unsupportedCodec) {
          // Already explained; recovering would only fail again.
          hls.destroy();
          if (state.hls === hls) state.hls = null;
          return;
        }
        if (lowLatency && !probe.frags) {
          // No low-latency rendition for this stream (ingestd runs with --low-latency off, or
          // an older one): the classic playlist.
          play(url.replace(/\/ll\.m3u8(\?|$)/, '/index.m3u8$1'), kind, title, startAt);
          return;
        }
        setStatus(`playback error: ${d.details}`, true);
        if (d.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
          overlay('Stream unavailable, retrying…');
          setTimeout(() => { if (state.hls === hls) hls.startLoad(); }, 2000);
        } else if (d.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else {
          overlay(`Cannot play: ${d.details}`);
          hls.destroy();
          if (state.hls === hls) state.hls = null;
        }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      probe.engine = 'native';
      if (kind === 'playback' && startAt) video.addEventListener('loadedmetadata', () => { video.currentTime = startAt; }, { once: true });
      // The native player follows a growing playlist by itself; the upload's end is seen when
      // the video ends.
      video.addEventListener('ended', () => { if (state.pb && state.pb.playlist === url) uploadComplete(state.pb); }, { once: true });
      video.src = url;
      video.play().catch(() => overlay('Click play to start'));
    } else {
      overlay('This browser cannot play HLS');
    }
  }

  video.addEventListener('playing', () => overlay(''));
  video.addEventListener('ended', () => { probe.ended = true; setStatus('played to the end'); });
  video.addEventListener('timeupdate', updateMarker);

  // The main player's "Stop device video": for a device's live channel, to an operator.
  function renderStopLive() {
    const m = state.playingLive && /^(\d{12})_(\d+)$/.exec(state.playingLive);
    $('stop-live').classList.toggle('hidden', !(m && mayCommand()));
  }
  $('stop-live').addEventListener('click', async () => {
    const m = /^(\d{12})_(\d+)$/.exec(state.playingLive || '');
    if (!m) return;
    try {
      await stopChannel(m[1], m[2]);
      setStatus(`device ${m[1]} told to stop channel ${m[2]}`);
    } catch (e) {
      setStatus(`stop: ${errText(e)}`, true);
    }
  });
  const stopChannel = (sim, ch) => getJSON(`/api/devices/${sim}/channels/${ch}/stop`, { method: 'POST' });

  function playLive(name) {
    const s = state.streams.find((x) => x.name === name);
    const classic = s ? s.url : `/live/${name}/index.m3u8`;
    // `?ll=0` in the page's address: the classic playlist (for comparison).
    play(new URLSearchParams(location.search).get('ll') === '0' ? classic : llUrlOf(classic), 'live', name);
    const m = /^(\d{12})_(\d+)$/.exec(name);
    if (m) selectDevice(m[1], [Date.now() - 3600000, Date.now() + 3600000]);
  }
  function playSession(s) {
    play(`/vod/session/${s.id}/index.m3u8`, s.ended_ms == null ? 'event' : 'vod', `${s.stream} · ${fmtTime(s.started_ms)}`);
    if (s.sim) selectDevice(s.sim, [s.started_ms - 60000, (s.ended_ms || Date.now()) + 60000]);
  }
  function playIncident(i) {
    const names = alarmNames(i.alarm);
    play(`/vod/incident/${i.id}/index.m3u8`, incidentOpen(i) ? 'event' : 'vod',
      `${names.length ? names.join(', ') : i.kind} · ${i.sim} · ${fmtTime(i.started_ms)}`);
    selectDevice(i.sim, [i.started_ms - 60000, (i.ended_ms || Date.now()) + 60000]);
  }

  async function watch(sim, ch, button) {
    const name = `${sim}_${ch}`;
    if (button) button.disabled = true;
    overlay(`Asking device ${sim} to stream channel ${ch}…`);
    try {
      const r = await getJSON(`/api/devices/${sim}/channels/${ch}/watch`, { method: 'POST' });
      await refresh();
      play(llUrlOf(r.playlist), 'live', name);
      selectDevice(sim);
    } catch (e) {
      overlay(`Channel ${ch} of ${sim}: ${e.message}`);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- live grid ---------------------------------------------------------------------
  // Tiles of live channels (of one vehicle or several), each its own hls.js player on the
  // classic playlist (several low-latency players would poll several times a second each).
  // A tile whose channel is not streaming asks the device first (watch), like the list's
  // button. Nothing stops a device when the page closes: ingestd does that once no page has
  // loaded the channel's playlist for its idle limit (60 s by default), counting every viewer.
  const grid = { tiles: [], cols: 2 };
  // Readable by the browser test: one entry per tile.
  window.hlsdGrid = grid.tiles;

  function openGrid(names) {
    $('grid-card').classList.remove('hidden');
    // An idle main player would only push the grid down.
    if (!state.playing) $('player-card').classList.add('hidden');
    for (const n of names) if (!grid.tiles.some((t) => t.stream === n)) addTile(n);
    if (grid.tiles.length > 4 && grid.cols < 3) setGridCols(3);
    renderGridAdd();
    $('grid-card').scrollIntoView({ block: 'nearest' });
  }
  function setGridCols(n) {
    grid.cols = n;
    $('grid-layout').value = String(n);
    $('tiles').className = `tiles cols-${n}`;
  }
  function renderGridAdd() {
    const sel = $('grid-add');
    sel.replaceChildren(el('option', { value: '' }, 'channel…'));
    for (const d of state.devices) {
      for (const ch of d.channels.length ? d.channels : [1]) {
        const n = `${d.sim}_${ch}`;
        if (!grid.tiles.some((t) => t.stream === n)) sel.append(el('option', { value: n }, `${d.plate || d.sim} ch ${ch}`));
      }
    }
    $('grid-what').textContent = `${grid.tiles.length} channel${grid.tiles.length === 1 ? '' : 's'}`;
  }
  $('grid-layout').addEventListener('change', (e) => setGridCols(Number(e.target.value)));
  $('grid-add').addEventListener('change', (e) => { if (e.target.value) openGrid([e.target.value]); });
  $('grid-close').addEventListener('click', () => {
    for (const t of grid.tiles.slice()) removeTile(t);
    $('grid-card').classList.add('hidden');
  });

  function addTile(stream) {
    const [, sim, ch] = /^(\d{12})_(\d+)$/.exec(stream) || [null, null, null];
    const dev = state.devices.find((d) => d.sim === sim);
    const v = el('video', { muted: '', playsinline: '' });
    v.muted = true;
    const status = el('span', { class: 'tile-status muted' }, 'starting…');
    const stopBtn = el('button', { type: 'button', class: mayCommand() && sim ? '' : 'hidden',
      title: 'Tell the device to stop streaming this channel (0x9102)' }, 'Stop');
    const closeBtn = el('button', { type: 'button', title: 'Remove the tile (the device keeps streaming for other viewers)' }, '✕');
    const t = { stream, sim, ch, video: v, hls: null, state: 'starting', frags: 0, error: null };
    t.node = el('div', { class: 'tile', 'data-stream': stream },
      el('div', { class: 'tile-head' },
        el('span', { class: 'tile-name' }, el('span', { class: 'dot live' }), dev && dev.plate ? `${dev.plate} · ch ${ch}` : stream),
        status, stopBtn, closeBtn),
      v);
    t.setState = (s, text) => { t.state = s; status.textContent = text || s; };
    stopBtn.addEventListener('click', async () => {
      stopBtn.disabled = true;
      try {
        await stopChannel(sim, ch);
        if (t.hls) { t.hls.destroy(); t.hls = null; }
        t.setState('stopped', 'stopped');
      } catch (e) {
        t.setState('error', `stop: ${errText(e)}`);
      } finally {
        stopBtn.disabled = false;
      }
    });
    closeBtn.addEventListener('click', () => removeTile(t));
    grid.tiles.push(t);
    $('tiles').append(t.node);
    startTile(t);
  }
  function removeTile(t) {
    if (t.hls) { t.hls.destroy(); t.hls = null; }
    t.node.remove();
    const i = grid.tiles.indexOf(t);
    if (i >= 0) grid.tiles.splice(i, 1);
    renderGridAdd();
  }
  async function startTile(t) {
    let url = `/live/${t.stream}/index.m3u8`;
    if (!liveStream(t.stream) && t.sim) {
      if (!mayCommand()) { t.setState('offline', 'not streaming'); return; }
      t.setState('watching', 'asking the device…');
      try {
        url = (await getJSON(`/api/devices/${t.sim}/channels/${t.ch}/watch`, { method: 'POST' })).playlist;
      } catch (e) {
        t.setState('error', errText(e));
        return;
      }
    }
    if (!grid.tiles.includes(t)) return;
    t.setState('loading', 'loading…');
    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({ liveSyncDurationCount: 3, maxBufferLength: 20, backBufferLength: 20 });
      t.hls = hls;
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => { t.video.play().catch(() => t.setState('paused', 'click to play')); });
      hls.on(window.Hls.Events.FRAG_CHANGED, () => { t.frags++; });
      hls.on(window.Hls.Events.ERROR, (_e, d) => {
        if (!d.fatal) return;
        t.error = d.details;
        if (d.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
          t.setState('retrying', 'unavailable, retrying…');
          setTimeout(() => { if (t.hls === hls) hls.startLoad(); }, 2000);
        } else if (d.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else {
          t.setState('error', d.details);
        }
      });
      hls.loadSource(url);
      hls.attachMedia(t.video);
    } else {
      t.video.src = url;
      t.video.play().catch(() => t.setState('paused', 'click to play'));
    }
    t.video.addEventListener('playing', () => t.setState('playing', 'live'));
  }

  // ---- administration (admins) --------------------------------------------------------
  // What the daemons run with (segment target, retention, automatic stop, device policy,
  // access), the accounts and the audit log.
  const SETTING_NAMES = {
    'ingestd.segment_target_secs': 'Segment target (s)', 'ingestd.retention_days': 'Recordings kept (days)',
    'ingestd.position_retention_days': 'Positions kept (days)', 'ingestd.auto_stop_secs': 'Stop unwatched video after (s)',
    'ingestd.device_auth': 'Device authentication', 'ingestd.low_latency': 'Low-latency HLS', 'ingestd.host': 'ingestd host',
  };
  async function loadAdmin() {
    $('admin-view').classList.remove('hidden');
    try {
      const [settings, users, audit] = await Promise.all([
        getJSON('/api/settings'), getJSON('/api/users'), getJSON('/api/audit?limit=30'),
      ]);
      const kv = $('admin-settings');
      kv.replaceChildren();
      for (const s of settings.catalog) {
        kv.append(el('tr', { title: `written ${fmtTime(s.updated_ms)}` }, el('th', {}, SETTING_NAMES[s.name] || s.name), el('td', {}, s.value)));
      }
      for (const [k, v] of Object.entries(settings.hlsd)) kv.append(el('tr', {}, el('th', {}, `hlsd ${k.replaceAll('_', ' ')}`), el('td', {}, String(v))));
      $('admin-users').replaceChildren(...users.map((u) => el('tr', { class: u.disabled ? 'muted' : '' },
        el('td', {}, u.name), el('td', {}, u.role), el('td', {}, u.role === 'admin' ? 'everything' : (u.grants.join(', ') || 'nothing')))));
      $('admin-audit').replaceChildren(...audit.map((a) => el('tr', {},
        el('td', {}, fmtTime(a.at_ms)), el('td', {}, a.actor), el('td', {}, a.action), el('td', {}, a.target), el('td', { class: 'sub' }, a.detail || ''))));
    } catch (e) {
      $('admin-settings').replaceChildren(el('tr', {}, el('td', {}, `Could not load: ${errText(e)}`)));
    }
  }
  $('admin-refresh').addEventListener('click', loadAdmin);

  // ---- device view: a day of recordings -----------------------------------------------
  function openDeviceView(sim, ask) {
    if (dv.sim !== sim) {
      Object.assign(dv, { sim, asked: false, recs: null, recsErr: null, recsBusy: false, sessions: [], sessErr: null, selected: null });
      dv.day = dv.day || dayOf(new Date());
      showDetail(null);
    }
    if (ask) dv.asked = true;
    $('device-view').classList.remove('hidden');
    $('dv-sim').textContent = sim;
    const d = state.devices.find((x) => x.sim === sim);
    $('dv-plate').textContent = d && d.plate ? `· ${d.plate}` : '';
    loadTimeline();
  }

  function setDay(day) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day || '')) return;
    dv.day = day;
    loadTimeline();
  }

  // Both rows of the day: our sessions from the catalog and, once the view was opened, the
  // device's own list (0x9205, answered within the device's answer timeout).
  async function loadTimeline() {
    const token = ++dv.token;
    const { sim, day } = dv;
    const [from, to] = dayRange(day);
    $('dv-day').value = day;
    dv.recs = null; dv.recsErr = null; dv.recsBusy = dv.asked;
    renderTimeline();
    const sessions = loadSessionsRow();
    if (dv.asked) {
      try {
        const recs = await getJSON(`/api/devices/${sim}/recordings?channel=0&from=${from}&to=${to - 1}`);
        if (token !== dv.token) return;
        dv.recs = recs.slice().sort((a, b) => a.channel - b.channel || a.start_ms - b.start_ms);
      } catch (e) {
        if (token !== dv.token) return;
        dv.recsErr = e;
      }
      dv.recsBusy = false;
      renderTimeline();
    }
    await sessions;
  }

  async function loadSessionsRow() {
    const token = dv.token;
    const [from, to] = dayRange(dv.day);
    dv.sessAt = Date.now();
    try {
      const [v, pbs] = await Promise.all([
        getJSON(`/api/devices/${dv.sim}/sessions?from=${from}&to=${to}`),
        getJSON(`/api/devices/${dv.sim}/playbacks?from=${from}&to=${to}`).catch(() => []),
      ]);
      if (token !== dv.token) return;
      dv.sessions = placeUploads(v, pbs); dv.sessErr = null;
    } catch (e) {
      if (token !== dv.token) return;
      dv.sessErr = e;
    }
    renderTimeline();
  }

  // An upload from the device belongs where the recording is on the day (the span its playback
  // request asked for, `/api/devices/<sim>/playbacks`), not where we received it.
  function placeUploads(sessions, playbacks) {
    const bySession = new Map(playbacks.filter((p) => p.session_id).map((p) => [p.session_id, p]));
    const out = sessions.filter((x) => !bySession.has(x.id));
    for (const p of bySession.values()) {
      const x = sessions.find((q) => q.id === p.session_id);
      const base = x || { id: p.session_id, channel: p.channel, kind: 'playback', stream: p.stream };
      out.push({ ...base, started_ms: p.from_ms, ended_ms: p.to_ms, uploaded_ms: x ? x.started_ms : null });
    }
    return out;
  }

  function renderTimeline() {
    if (!dv.sim || !dv.day) return;
    const [from, to] = dayRange(dv.day);
    const frac = (t) => (Math.min(Math.max(t, from), to) - from) / (to - from);
    const place = (a, b) => `left:${(frac(a) * 100).toFixed(4)}%;width:${(Math.max(0, frac(b) - frac(a)) * 100).toFixed(4)}%`;
    const recs = (dv.recs || []).filter((r) => r.end_ms > from && r.start_ms < to);
    const sessions = dv.sessions.filter((x) => x.channel != null);
    const incidents = state.incidents.filter((i) => i.sim === dv.sim && (i.ended_ms ?? Date.now()) >= from && i.started_ms < to);
    const dev = state.devices.find((d) => d.sim === dv.sim);
    const chans = new Set([...(dev ? dev.channels : []), ...recs.map((r) => r.channel), ...sessions.map((x) => x.channel)]);
    if (!chans.size) chans.add(1);

    // Status line: what was asked and what came back (errors as text: an offline device, a
    // timeout, a refusal are facts the operator needs).
    const st = $('dv-status');
    st.classList.toggle('error', !!(dv.recsErr || dv.sessErr));
    const parts = [];
    if (!dv.asked) parts.push('The device has not been asked for its recordings yet.');
    else if (dv.recsBusy) parts.push('Asking the device for its recordings…');
    else if (dv.recsErr) parts.push(`The device's recordings could not be listed: ${errText(dv.recsErr)}.`);
    else {
      const alarms = recs.filter((r) => Number(r.alarm) !== 0).length;
      parts.push(`On the device: ${recs.length} recording${recs.length === 1 ? '' : 's'} this day` +
        (alarms ? `, ${alarms} alarm-flagged` : '') + '.');
    }
    probe.timeline = {
      token: dv.token, sim: dv.sim, day: dv.day, asked: dv.asked, busy: dv.recsBusy, recordings: dv.recs ? recs.length : null,
      error: dv.recsErr ? errText(dv.recsErr) : null, sessions: sessions.length,
    };
    if (dv.sessErr) parts.push(`Our sessions could not be loaded: ${errText(dv.sessErr)}.`);
    else parts.push(`Recorded here: ${sessions.length} session${sessions.length === 1 ? '' : 's'}.`);
    st.textContent = parts.join(' ');

    const tl = $('timeline');
    tl.replaceChildren();
    const row = (cls, label, track) => tl.append(el('div', { class: `tl-label ${cls}` }, ...label), track);
    const [y, m, d] = dayParts(dv.day);
    const axis = el('div', { class: 'tl-track tl-axis' });
    for (let h = 0; h <= 24; h++) {
      const t = new Date(y, m, d, h).getTime();
      if (t > to) break;
      const major = h % 3 === 0;
      axis.append(el('span', { class: `tl-tick${major ? '' : ' minor'}`, style: `left:${(frac(t) * 100).toFixed(4)}%` },
        major && h < 24 ? `${pad2(h)}:00` : ''));
    }
    row('axis', [dv.day], axis);

    const inc = el('div', { class: 'tl-track tl-incidents' });
    for (const i of incidents) {
      const names = alarmNames(i.alarm);
      inc.append(el('button', {
        type: 'button', class: `tl-bar inc${incidentOpen(i) ? ' open' : ''}`, style: place(i.started_ms, i.ended_ms ?? Date.now()),
        'data-id': i.id, title: `Incident: ${names.length ? names.join(', ') : i.kind} · ch ${i.channel ?? 'all'}\n` +
          `${fmtTime(i.started_ms)} → ${i.ended_ms == null ? 'in progress' : fmtClock(i.ended_ms)}` +
          (incidentVideoText(i) ? `\n${incidentVideoText(i)}` : ''),
        onclick: () => { showDetail({ type: 'incident', item: i }); if (incidentHasVideo(i)) playIncident(i); },
      }));
    }
    row('inc', ['Incidents'], inc);

    for (const ch of [...chans].sort((a, b) => a - b)) {
      const onDev = el('div', { class: 'tl-track dev', 'data-channel': ch });
      if (!dv.asked) onDev.append(el('button', { type: 'button', class: 'tl-ask', onclick: askDevice }, 'Ask the device'));
      else if (dv.recsBusy) onDev.append(el('span', { class: 'tl-note' }, 'asking…'));
      else if (dv.recsErr) onDev.append(el('span', { class: 'tl-note error' }, `not available: ${dv.recsErr.message}`));
      for (const r of recs.filter((x) => x.channel === ch)) onDev.append(deviceBar(r, place));
      row('dev', [`Ch ${ch} `, el('span', { class: 'sub' }, 'on the device')], onDev);

      const here = el('div', { class: 'tl-track here', 'data-channel': ch });
      for (const x of sessions.filter((q) => q.channel === ch)) here.append(sessionBar(x, place));
      row('here', [`Ch ${ch} `, el('span', { class: 'sub' }, 'recorded here')], here);
    }
    // Lines across the rows: now (on today) and the picture on screen.
    const lines = el('div', { class: 'tl-lines' });
    const now = Date.now();
    if (now >= from && now < to) lines.append(el('div', { class: 'tl-now', style: `--x:${frac(now)}`, title: `now ${fmtClock(now)}` }));
    lines.append(el('div', { id: 'tl-playhead', class: 'tl-playhead hidden' }));
    tl.append(lines);
    updatePlayhead(probe.pdt);
  }

  function deviceBar(r, place) {
    const flagged = Number(r.alarm) !== 0;
    const title = [
      `Channel ${r.channel} · on the device`,
      `${fmtTime(r.start_ms)} → ${fmtClock(r.end_ms)} (${fmtDur(r.end_ms - r.start_ms)})`,
      `size ${fmtSize(r.size)}`,
      alarmText(r.alarm),
      `${AV_TYPES[r.av_type] || `AV type ${r.av_type}`} · ${STREAM_TYPES[r.stream_type] || `stream ${r.stream_type}`} · ` +
        `${STORAGE_TYPES[r.storage_type] || `storage ${r.storage_type}`}`,
      'Click: the device uploads it and it plays here',
    ].join('\n');
    const playing = state.pb && state.pb.sim === dv.sim && state.pb.ch === r.channel &&
      state.pb.start_ms === r.start_ms && state.pb.end_ms === r.end_ms;
    return el('button', {
      type: 'button', class: `tl-bar dev${flagged ? ' alarm' : ''}${playing ? ' active' : ''}`, style: place(r.start_ms, r.end_ms),
      title, 'aria-label': `Recording on the device, channel ${r.channel}, ${fmtTime(r.start_ms)}`,
      'data-channel': r.channel, 'data-start': r.start_ms, 'data-end': r.end_ms, 'data-alarm': r.alarm,
      onclick: () => { showDetail({ type: 'device', item: r }); startPlayback(dv.sim, r); },
    });
  }

  function sessionBar(x, place) {
    const end = x.ended_ms ?? Date.now();
    const url = `/vod/session/${x.id}/index.m3u8`;
    return el('button', {
      type: 'button', class: `tl-bar here ${x.kind}${x.ended_ms == null ? ' open' : ''}${state.playing === url ? ' active' : ''}`,
      style: place(x.started_ms, end), 'data-id': x.id, 'data-kind': x.kind,
      'data-start': x.started_ms, 'data-end': end,
      title: `Channel ${x.channel} · recorded here (${x.kind === 'playback' ? 'fetched from the device' : x.kind})\n${x.stream}\n` +
        `${fmtTime(x.started_ms)} → ${x.ended_ms == null ? 'still recording' : fmtClock(x.ended_ms)} (${fmtDur(end - x.started_ms)})\n` +
        'Click to play',
      onclick: () => { showDetail({ type: 'session', item: x }); playSession(x); },
    });
  }

  function updatePlayhead(t) {
    const ph = document.getElementById('tl-playhead');
    if (!ph || !dv.day) return;
    const [from, to] = dayRange(dv.day);
    const on = t != null && t >= from && t < to;
    ph.classList.toggle('hidden', !on);
    if (on) { ph.style.setProperty('--x', (t - from) / (to - from)); ph.title = `picture ${fmtClock(t)}`; }
  }

  function askDevice() { dv.asked = true; loadTimeline(); }

  // What was clicked, spelled out, with its actions (the tooltip's content, and links).
  function showDetail(sel) {
    dv.selected = sel;
    const box = $('dv-detail');
    if (!sel) { box.textContent = 'Click a bar: one on the device is uploaded and played; one recorded here plays at once.'; return; }
    const x = sel.item;
    box.replaceChildren();
    if (sel.type === 'device') {
      box.append(el('b', {}, `Ch ${x.channel} on the device`), ` ${fmtTime(x.start_ms)} → ${fmtClock(x.end_ms)}`,
        ` · ${fmtDur(x.end_ms - x.start_ms)} · ${fmtSize(x.size)} · `,
        el('span', { class: Number(x.alarm) ? 'alarm-text' : '' }, alarmText(x.alarm)), ' ',
        el('button', { type: 'button', onclick: () => startPlayback(dv.sim, x) }, 'Play from the device'));
    } else if (sel.type === 'session') {
      box.append(el('b', {}, `Ch ${x.channel} recorded here`), ` (${x.kind}) ${fmtTime(x.started_ms)} → `,
        x.ended_ms == null ? 'still recording' : fmtClock(x.ended_ms), ` · ${x.stream} `,
        el('button', { type: 'button', onclick: () => playSession(x) }, 'Play'), ' ',
        mp4Link('session', x, x.ended_ms == null));
    } else {
      box.append(el('b', {}, 'Incident'), ' ', incidentWhat(x), ` ${fmtTime(x.started_ms)} `);
      if (incidentHasVideo(x)) {
        box.append(el('button', { type: 'button', onclick: () => playIncident(x) }, 'Play'), ' ', mp4Link('incident', x, incidentOpen(x)));
      }
    }
    if (sel.error) box.append(el('div', { class: 'error' }, sel.error));
  }

  // ---- device playback (0x9201 / 0x9202) ---------------------------------------------
  async function startPlayback(sim, r) {
    const ch = r.channel;
    const url = `/api/devices/${sim}/channels/${ch}/playback`;
    const body = { start_ms: r.start_ms, end_ms: r.end_ms };
    overlay(`Asking device ${sim} to upload channel ${ch}, ${fmtTime(r.start_ms)} → ${fmtClock(r.end_ms)}…`);
    let ans;
    try {
      try {
        ans = await postJSON(url, body);
      } catch (e) {
        // One upload per channel: this click means the operator wants this one instead.
        if (e.status !== 409) throw e;
        ans = await postJSON(url, { ...body, replace: true });
      }
    } catch (e) {
      const why = `The device did not start the upload: ${errText(e)}`;
      overlay(why);
      setStatus(why, true);
      if (dv.selected && dv.selected.item === r) showDetail({ ...dv.selected, error: why });
      return;
    }
    const pb = state.pb = {
      sim, ch, stream: ans.stream, playlist: ans.playlist || `/live/${ans.stream}/index.m3u8`,
      start_ms: r.start_ms, end_ms: r.end_ms, speed: 1, paused: false, stopped: false, uploaded: false,
      session: ans.session_id || null,
    };
    probe.playback = { request: body, answer: ans };
    $('pb-speed').value = '1';
    setPbState('uploading');
    renderPb();
    if (dv.sim === sim) renderTimeline();
    // The answer's playlist is this upload's own (its catalog session): it starts at the
    // requested time, so the player starts at its beginning, not at the live edge.
    play(pb.playlist, 'playback', `${sim} ch ${ch} · ${fmtTime(r.start_ms)} → ${fmtClock(r.end_ms)} · from the device`, 0);
  }

  async function pbControl(action, speed) {
    const pb = state.pb;
    if (!pb) return;
    const body = action === 'speed' ? { action, speed } : { action };
    setPbState(`${action}…`);
    try {
      const r = await postJSON(`/api/devices/${pb.sim}/channels/${pb.ch}/playback/control`, body);
      probe.control.push({ action, speed, ok: true, serial: r && r.serial });
      if (action === 'pause') { pb.paused = true; video.pause(); }
      if (action === 'resume') { pb.paused = false; video.play().catch(() => {}); }
      if (action === 'stop') pb.stopped = true;
      // The device sends faster and stamps the recording's own times: watch at that pace.
      if (action === 'speed') { pb.speed = speed; if (state.playing === pb.playlist) video.playbackRate = speed; }
      setPbState(pb.stopped ? 'stopped: the upload so far plays to its end' : pb.paused ? 'paused' : `uploading at ${pb.speed}×`);
    } catch (e) {
      probe.control.push({ action, speed, ok: false, error: errText(e) });
      setPbState(`${action} failed: ${errText(e)}`, true);
      if (action === 'speed') $('pb-speed').value = String(pb.speed);
    }
    renderPb();
  }

  // ENDLIST reached: the device finished (or was stopped). The upload is now a session of ours:
  // show it in the timeline and offer its MP4.
  async function uploadComplete(pb) {
    if (pb.uploaded) return;
    pb.uploaded = true;
    setPbState(pb.stopped ? 'stopped: upload ended' : 'upload complete');
    renderPb();
    if (dv.sim === pb.sim) loadSessionsRow();
    if (state.sim === pb.sim) selectDevice(pb.sim);
    if (pb.session) return;
    try {
      const all = await getJSON('/api/streams?all=1');
      const s = all.find((x) => x.name === pb.stream);
      if (s && s.recording_session_id) { pb.session = s.recording_session_id; renderPb(); }
    } catch (_) { /* the MP4 link is a convenience */ }
  }

  function setPbState(text, isError) {
    const s = $('pb-state');
    s.textContent = text;
    s.classList.toggle('error', !!isError);
  }

  function renderPb() {
    const pb = state.pb;
    const box = $('pb-controls');
    const show = !!pb && (state.playing === pb.playlist || !(pb.uploaded || pb.stopped));
    box.classList.toggle('hidden', !show);
    if (!show) return;
    const over = pb.uploaded || pb.stopped;
    $('pb-what').textContent = `${pb.sim} ch ${pb.ch} · ${fmtTime(pb.start_ms)} → ${fmtClock(pb.end_ms)}`;
    $('pb-pause').disabled = over || pb.paused;
    $('pb-resume').disabled = over || !pb.paused;
    $('pb-stop').disabled = over;
    $('pb-speed').disabled = over;
    const a = $('pb-mp4');
    // The download of the result, once there is all of it.
    a.classList.toggle('hidden', !(pb.session && pb.uploaded));
    if (pb.session) a.href = `/vod/session/${encodeURIComponent(pb.session)}/video.mp4`;
  }
  $('pb-pause').addEventListener('click', () => pbControl('pause'));
  $('pb-resume').addEventListener('click', () => pbControl('resume'));
  $('pb-stop').addEventListener('click', () => pbControl('stop'));
  $('pb-speed').addEventListener('change', (e) => pbControl('speed', Number(e.target.value)));

  $('dv-day').addEventListener('change', (e) => setDay(e.target.value));
  $('dv-prev').addEventListener('click', () => setDay(shiftDay(dv.day, -1)));
  $('dv-next').addEventListener('click', () => setDay(shiftDay(dv.day, 1)));
  $('dv-today').addEventListener('click', () => setDay(dayOf(new Date())));
  $('dv-ask').addEventListener('click', askDevice);

  // ---- start -------------------------------------------------------------------------
  $('hlsver').textContent = window.Hls ? `${window.Hls.version}${window.Hls.isSupported() ? '' : ' (unsupported here; using native HLS)'}` : 'missing';
  setInterval(() => { $('clock').textContent = fmtTime(Date.now()); }, 1000);
  setInterval(() => { if (me) refresh(); }, 5000);
  setInterval(updateMarker, 500);

  (async function init() {
    $('clock').textContent = fmtTime(Date.now());
    try {
      me = await getJSON('/api/me');
    } catch (e) {
      // 401: the login form is up; nothing else is loaded until the operator logs in.
      if (e.status === 401) return;
      throw e;
    }
    $('who').textContent = me.anonymous ? 'anonymous access (no login)' : `${me.name} · ${me.role}`;
    $('logout').classList.toggle('hidden', !!me.anonymous);
    if (me.role === 'admin') loadAdmin();
    await refresh();
    const q = new URLSearchParams(location.search);
    // `?grid=SIM_1,SIM_2`: those channels in the live grid, `&cols=3` for 3 × 3.
    if (q.get('cols') === '3') setGridCols(3);
    if (q.get('grid')) openGrid(q.get('grid').split(',').filter((n) => /^[A-Za-z0-9_-]{1,64}$/.test(n)));
    dv.day = /^\d{4}-\d{2}-\d{2}$/.test(q.get('day') || '') ? q.get('day') : dayOf(new Date());
    if (q.get('sim')) await selectDevice(q.get('sim'), null, q.get('recordings') === '1');
    if (q.get('stream')) playLive(q.get('stream'));
    else if (q.get('session')) {
      const s = state.sessions.find((x) => String(x.id) === q.get('session'));
      if (s) playSession(s);
      else play(`/vod/session/${q.get('session')}/index.m3u8`, 'vod', `session ${q.get('session')}`);
    } else if (q.get('incident')) {
      play(`/vod/incident/${q.get('incident')}/index.m3u8`, 'vod', `incident ${q.get('incident')}`);
    } else if (!state.sim && state.devices.length) {
      selectDevice(state.devices[0].sim);
    }
  })();
})();
