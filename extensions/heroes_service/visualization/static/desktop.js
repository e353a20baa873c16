// The desktop page: noVNC in the browser, connected through the gateway's authenticated bridge.
// The one-time ticket comes in the URL fragment (never sent to a server, so never in a log) and is
// removed from the address bar at once; it travels in the websocket's subprotocol header.
import RFB from '../novnc/core/rfb.js';

const params = new URLSearchParams(location.hash.slice(1));
history.replaceState(null, '', location.pathname + location.search);
const session = params.get('session') || '';
const ticket = params.get('ticket') || '';
const viewOnly = params.get('view') === '1';
const $ = (id) => document.getElementById(id);

function setState(state, text) {
  document.body.dataset.state = state;
  $('status').textContent = text;
}

const base = location.pathname.replace(/\/view$/, '');
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + '/ws/' +
  encodeURIComponent(session);
const rfb = new RFB($('screen'), url, { wsProtocols: ['binary', 'heroes-ticket.' + ticket] });
window.heroesDesktop = rfb;  // for tests and the browser console
rfb.viewOnly = viewOnly;
rfb.resizeSession = !viewOnly;   // the desktop follows the window; a watcher scales instead
rfb.scaleViewport = viewOnly;
rfb.qualityLevel = Number($('quality').value);
rfb.compressionLevel = Number($('compression').value);
$('mode').textContent = viewOnly ? 'view only' : '';

rfb.addEventListener('connect', () => { setState('connected', 'connected'); if (!viewOnly) rfb.focus(); });
rfb.addEventListener('disconnect', (e) =>
  setState('disconnected', e.detail.clean ? 'disconnected' : 'connection refused or lost'));
rfb.addEventListener('desktopname', (e) => { document.title = e.detail.name; });
rfb.addEventListener('clipboard', (e) => {
  $('clipboard').value = e.detail.text;
  if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(e.detail.text).catch(() => {});
});
$('send').addEventListener('click', () => { if (!viewOnly) rfb.clipboardPasteFrom($('clipboard').value); });
$('send').disabled = viewOnly;
$('quality').addEventListener('input', (e) => { rfb.qualityLevel = Number(e.target.value); });
$('compression').addEventListener('input', (e) => { rfb.compressionLevel = Number(e.target.value); });
$('fullscreen').addEventListener('click', () => $('screen').requestFullscreen && $('screen').requestFullscreen());
