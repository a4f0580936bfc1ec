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

await call.setUp();
document.body.dataset.ready = "1"; // for automation: set-up finished
