// rtc-agent caller page, entry module: one WebRTC call to the server, the
// `events` data channel for transcripts/state/tools (docs/data-channel.md),
// no build step. The page never sees a cloud API key: the server holds it.
//
//   protocol.js      message and state names, parsing, caller messages
//   call.js          the peer connection, offer/answer, stats, playout delay
//   audio.js         microphone access and audio levels
//   ui.js            status, notices, controls, diagnostics
//   conversation.js  transcripts, typed messages, tool rows
//   caller.js        a call's lifecycle, tying the above together

import * as caller from "./caller.js";
import { els, clearTypedText, typedText } from "./ui.js";

// The test hook (see caller.js).
window.rtcAgent = caller.hook;

els.call.addEventListener("click", () => {
  if (caller.inCall()) caller.hangUp("hung up");
  else caller.startCall();
});
els.mute.addEventListener("click", caller.toggleMute);
els.mic.addEventListener("change", caller.switchMicrophone);
els.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (caller.sendText(typedText())) clearTypedText();
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", caller.refreshMicrophones);
}
window.addEventListener("pagehide", caller.releaseOnPageHide);

await caller.setUp();
document.body.dataset.ready = "1"; // for automation: set-up finished
