// hlsd operator page: devices and live streams, a player (hls.js, or the browser's own HLS),
// the device's recordings, and its GPS track with a marker at the time of the picture on
// screen (from EXT-X-PROGRAM-DATE-TIME). No framework, no network beyond this server.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const video = $('video');
  const SVG_W = 600, SVG_H = 360, PAD = 26;
  const state = {
    devices: [], streams: [], sim: null, hls: null, frag: null, playing: null,
    positions: [], proj: null, tab: 'sessions', sessions: [], incidents: [], fixWindowMs: 120000,
  };
  // Readable from the console and by the browser test.
  const probe = window.hlsdState = {
    url: null, kind: null, errors: [], fatal: [], frags: 0, discontinuities: 0, lastCc: null,
    ended: false, pdt: null, marker: null, engine: null,
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
    if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
    return body;
  }

  // ---- lists -------------------------------------------------------------------------
  async function refresh() {
    try {
      const [devices, streams] = await Promise.all([getJSON('/api/devices'), getJSON('/api/streams')]);
      state.devices = devices; state.streams = streams;
      renderDevices(); renderStreams();
      const online = devices.filter((d) => d.online).length;
      $('summary').textContent = `${devices.length} devices · ${online} online · ${streams.length} live`;
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
      const pos = d.last_position;
      const li = el('li', { class: d.sim === state.sim ? 'selected' : '', onclick: () => selectDevice(d.sim) },
        el('div', { class: 'row' },
          el('span', { class: 'name' }, el('span', { class: `dot ${d.online ? 'on' : ''}` }), d.sim),
          el('span', { class: 'sub' }, d.plate || '')),
        el('div', { class: 'sub' }, `${d.online ? 'online' : 'offline'} · seen ${ago(d.last_seen_ms)}` +
          (pos ? ` · ${pos.speed_kmh.toFixed(0)} km/h` : '')),
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
  async function selectDevice(sim, range) {
    const changed = state.sim !== sim;
    state.sim = sim;
    renderDevices();
    $('track-sim').textContent = sim;
    const now = Date.now();
    const from = range ? range[0] : now - 7 * 86400000;
    const to = range ? range[1] : now + 60000;
    try {
      const [sessions, incidents] = await Promise.all([
        getJSON(`/api/devices/${sim}/sessions?from=${now - 30 * 86400000}`),
        getJSON(`/api/devices/${sim}/incidents?from=${now - 30 * 86400000}`),
      ]);
      state.sessions = sessions; state.incidents = incidents;
      renderRecordings();
      if (changed || range) {
        state.positions = await getJSON(`/api/devices/${sim}/positions?from=${from}&to=${to}&limit=20000`);
        drawTrack();
      }
    } catch (e) {
      $('recordings').replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, `Could not load: ${e.message}`)));
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
        : el('span', {}, el('span', { class: 'kind alarm' }, r.kind), r.source ? ` ${r.source}` : '');
      tb.append(el('tr', { class: state.playing === url ? 'playing' : '' },
        el('td', {}, fmtTime(r.started_ms)),
        el('td', {}, fmtDur(r.ended_ms == null ? null : r.ended_ms - r.started_ms)),
        el('td', {}, what),
        el('td', {}, el('button', { type: 'button', onclick: () => (isSession ? playSession(r) : playIncident(r)) }, 'Play'))));
    }
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
  function drawTrack() {
    const pts = state.positions;
    const line = $('track-line');
    const grid = $('grid-lines');
    grid.replaceChildren();
    $('track-empty').style.display = pts.length ? 'none' : '';
    $('track-empty').textContent = state.sim ? 'No positions in this time range' : 'Select a device to see its track';
    if (!pts.length) {
      line.setAttribute('points', '');
      state.proj = null;
      for (const id of ['track-start', 'track-end']) { $(id).setAttribute('cx', -10); $(id).setAttribute('cy', -10); }
      $('track-info').textContent = '';
      return;
    }
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const p of pts) {
      minLat = Math.min(minLat, p.lat); maxLat = Math.max(maxLat, p.lat);
      minLon = Math.min(minLon, p.lon); maxLon = Math.max(maxLon, p.lon);
    }
    // Equirectangular with the mid-latitude's scale: faithful enough for a city-sized track.
    const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    const w = Math.max((maxLon - minLon) * k, 1e-6), h = Math.max(maxLat - minLat, 1e-6);
    const scale = Math.min((SVG_W - 2 * PAD) / w, (SVG_H - 2 * PAD) / h);
    const ox = (SVG_W - w * scale) / 2, oy = (SVG_H - h * scale) / 2;
    state.proj = (lat, lon) => [ox + (lon - minLon) * k * scale, SVG_H - (oy + (lat - minLat) * scale)];
    const step = Math.max(1, Math.floor(pts.length / 4000));
    const xy = [];
    for (let i = 0; i < pts.length; i += step) xy.push(state.proj(pts[i].lat, pts[i].lon));
    xy.push(state.proj(pts[pts.length - 1].lat, pts[pts.length - 1].lon));
    line.setAttribute('points', xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '));
    const [sx, sy] = xy[0], [ex, ey] = xy[xy.length - 1];
    $('track-start').setAttribute('cx', sx); $('track-start').setAttribute('cy', sy);
    $('track-end').setAttribute('cx', ex); $('track-end').setAttribute('cy', ey);
    for (let i = 1; i < 6; i++) {
      const x = (SVG_W * i) / 6, y = (SVG_H * i) / 6;
      grid.append(svgLine(x, 0, x, SVG_H), svgLine(0, y, SVG_W, y));
    }
    $('track-info').textContent = `${pts.length} fixes · ${fmtTime(pts[0].time_ms)} → ${fmtTime(pts[pts.length - 1].time_ms).slice(11)}`;
    updateMarker();
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

  function play(url, kind, title) {
    if (state.hls) { state.hls.destroy(); state.hls = null; }
    state.frag = null;
    state.playing = url;
    Object.assign(probe, { url, kind, unsupportedCodec: null, errors: [], fatal: [], frags: 0, discontinuities: 0, lastCc: null, ended: false });
    const badge = $('badge');
    badge.textContent = kind === 'live' ? 'LIVE' : kind === 'event' ? 'RECORDING' : 'VOD';
    badge.className = `badge ${kind === 'live' ? 'live' : 'vod'}`;
    $('title').textContent = title;
    overlay('');
    renderStreams(); renderRecordings();
    if (window.Hls && window.Hls.isSupported()) {
      probe.engine = 'hls.js';
      const hls = new window.Hls({ liveSyncDurationCount: 3, maxBufferLength: 30, backBufferLength: 60 });
      state.hls = hls;
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
      video.src = url;
      video.play().catch(() => overlay('Click play to start'));
    } else {
      overlay('This browser cannot play HLS');
    }
  }

  video.addEventListener('playing', () => overlay(''));
  video.addEventListener('ended', () => { probe.ended = true; setStatus('played to the end'); });
  video.addEventListener('timeupdate', updateMarker);

  function playLive(name) {
    const s = state.streams.find((x) => x.name === name);
    play(s ? s.url : `/live/${name}/index.m3u8`, 'live', name);
    const m = /^(\d{12})_(\d+)$/.exec(name);
    if (m) selectDevice(m[1], [Date.now() - 3600000, Date.now() + 3600000]);
  }
  function playSession(s) {
    play(`/vod/session/${s.id}/index.m3u8`, s.ended_ms == null ? 'event' : 'vod', `${s.stream} · ${fmtTime(s.started_ms)}`);
    if (s.sim) selectDevice(s.sim, [s.started_ms - 60000, (s.ended_ms || Date.now()) + 60000]);
  }
  function playIncident(i) {
    play(`/vod/incident/${i.id}/index.m3u8`, i.ended_ms == null ? 'event' : 'vod', `${i.kind} · ${i.sim} · ${fmtTime(i.started_ms)}`);
    selectDevice(i.sim, [i.started_ms - 60000, (i.ended_ms || Date.now()) + 60000]);
  }

  async function watch(sim, ch, button) {
    const name = `${sim}_${ch}`;
    if (button) button.disabled = true;
    overlay(`Asking device ${sim} to stream channel ${ch}…`);
    try {
      const r = await getJSON(`/api/devices/${sim}/channels/${ch}/watch`, { method: 'POST' });
      await refresh();
      play(r.playlist, 'live', name);
      selectDevice(sim);
    } catch (e) {
      overlay(`Channel ${ch} of ${sim}: ${e.message}`);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- start -------------------------------------------------------------------------
  $('hlsver').textContent = window.Hls ? `${window.Hls.version}${window.Hls.isSupported() ? '' : ' (unsupported here; using native HLS)'}` : 'missing';
  setInterval(() => { $('clock').textContent = fmtTime(Date.now()); }, 1000);
  setInterval(refresh, 5000);
  setInterval(updateMarker, 500);

  (async function init() {
    $('clock').textContent = fmtTime(Date.now());
    await refresh();
    const q = new URLSearchParams(location.search);
    if (q.get('sim')) await selectDevice(q.get('sim'));
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
