// rtc-agent caller page, entry module: one WebRTC call to the server, the
// `events` data channel for transcripts/state/tools (docs/data-channel.md),
// no build step. The page never sees a cloud API key: the server holds it.
//
//   protocol.js      message and state names, parsing, caller messages
//   peer.js          the peer connection, offer/answer, stats, playout delay
//   audio.js         microphone access and audio levels
//   ui.js            status, notices, controls, diagnostics
//   conversation.js  transcripts, typed messages, tool rows
//   call.js          a call's lifecycle, tying the above together

import * as call from "./call.js";
import { els, clearTypedText, typedText } from "./ui.js";

// The test hook (see call.js).
window.rtcAgent = call.hook;

els.call.addEventListener("click", () => {
  if (call.inCall()) call.hangUp("hung up");
  else call.startCall();
});
els.mute.addEventListener("click", call.toggleMute);
els.mic.addEventListener("change", call.switchMicrophone);
els.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (call.sendText(typedText())) clearTypedText();
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", call.refreshMicrophones);
}
window.addEventListener("pagehide", call.releaseOnPageHide);

// A lost network path: the browser's own signs (iOS Safari has no
// navigator.connection; online/offline only when every network is gone or back).
window.addEventListener("online", () => call.networkChanged("online"));
window.addEventListener("offline", () => call.networkChanged("offline"));
if (navigator.connection && navigator.connection.addEventListener) {
  navigator.connection.addEventListener("change", () => call.networkChanged("change"));
}
// Back from the lock screen, another app or the back-forward cache, or a tap:
// wake the audio iOS suspended (a tap is the gesture it accepts for that).
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") call.wake();
});
window.addEventListener("pageshow", () => call.wake());
document.addEventListener("resume", () => call.wake()); // Page Lifecycle (Chrome on Android)
for (const type of ["touchend", "click", "keydown"]) {
  document.addEventListener(type, () => call.wake(true), { capture: true, passive: true });
}

await call.setUp();
document.body.dataset.ready = "1"; // for automation: set-up finished
