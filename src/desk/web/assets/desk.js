// gridwatch desk: live refresh of the server-rendered views, local times, the alarm.
// No framework, no inline script (the page's Content-Security-Policy forbids it).
'use strict';
(function () {
  const body = document.body;
  const page = body.dataset.page;

  function pad(n) { return String(n).padStart(2, '0'); }
  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      const d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) {
        t.textContent = pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
          pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
        t.title = d.toString();
      }
    });
  }
  localTimes(document);
  if (page === 'login') return;

  // What each page refreshes from the server when something changes: [fragment URL, element id].
  const siteLive = document.getElementById('site-live');
  const targets = {
    wall: ['/fragments/wall', 'wall'],
    incidents: ['/fragments/incidents', 'incidents'],
    feed: ['/fragments/feed' + location.search, 'feed-rows'],
    notices: ['/fragments/notices', 'notices'],
  };
  if (siteLive) targets.site = ['/fragments/sites/' + encodeURIComponent(siteLive.dataset.site), 'site-live'];
  let pending = false;
  let again = false;
  async function refresh() {
    const target = targets[page];
    if (!target) return;
    if (pending) { again = true; return; }
    pending = true;
    await new Promise(function (r) { setTimeout(r, 300); });
    const el = document.getElementById(target[1]);
    // Someone typing a note keeps their text: refresh once they leave the field.
    if (el && el.contains(document.activeElement) && document.activeElement.tagName !== 'BUTTON') {
      pending = false; again = true; return;
    }
    try {
      const r = await fetch(target[0], { credentials: 'same-origin' });
      if (r.status === 401) { location.href = '/login?next=' + encodeURIComponent(location.pathname); return; }
      if (r.ok && el) { el.innerHTML = await r.text(); localTimes(el); }
    } finally {
      pending = false;
      if (again) { again = false; refresh(); }
    }
  }
  document.addEventListener('focusout', function () { if (again && !pending) { again = false; refresh(); } });

  // The alarm: visible while unclaimed alerts wait, with a beep unless muted in this browser.
  const alarm = document.getElementById('alarm');
  const count = document.getElementById('alarm-count');
  const mute = document.getElementById('mute');
  let open = 0;
  let audio = null;
  function muted() { return localStorage.getItem('gridwatch-mute') === '1'; }
  function showMute() { if (mute) mute.textContent = muted() ? body.dataset.unmute : body.dataset.mute; }
  if (mute) {
    mute.addEventListener('click', function () {
      localStorage.setItem('gridwatch-mute', muted() ? '0' : '1');
      showMute();
    });
  }
  showMute();
  document.addEventListener('click', function () {
    try { if (!audio) audio = new AudioContext(); if (audio.state === 'suspended') audio.resume(); } catch (e) { /* no sound */ }
  });
  function beep() {
    if (!audio || muted() || audio.state !== 'running') return;
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.frequency.value = 880;
    g.gain.value = 0.2;
    o.connect(g); g.connect(audio.destination);
    o.start(); o.stop(audio.currentTime + 0.3);
  }
  async function checkAlarm() {
    try {
      const r = await fetch('/api/alarm', { credentials: 'same-origin' });
      if (!r.ok) return;
      open = (await r.json()).open;
      if (alarm) alarm.hidden = open === 0;
      if (count) count.textContent = String(open);
    } catch (e) { /* the stream reconnects by itself */ }
  }
  setInterval(function () { if (open > 0) beep(); }, 5000);

  const stream = new EventSource('/api/stream');
  // A change stored between the page's render and the stream's (re)connection is never
  // sent on it (after a button's post-and-redirect, the device often answers then): catch up.
  stream.onopen = function () { checkAlarm(); refresh(); };
  stream.onmessage = function (m) {
    let c = {};
    try { c = JSON.parse(m.data); } catch (e) { return; }
    if (c.type !== 'event' && c.type !== 'notice') checkAlarm();
    // The site page follows its own site; the notices page its notices.
    if (page === 'site' && c.site !== siteLive.dataset.site && c.type !== 'lagged') return;
    if (page === 'notices' && c.type !== 'notice' && c.type !== 'lagged') return;
    refresh();
  };
})();
