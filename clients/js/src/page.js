// Page visibility and connectivity (browsers; a no-op where there is no `document`, as in
// Node). The stream stays open while the page is hidden unless `closeWhenHiddenMs` is set;
// it reconnects at once on `online` and when the page becomes visible again.
//
// Invariants:
// 1. Only a tab that runs its own stream reacts (a shared follower has none).
// 2. A waiting reconnect (backoff or the node's `retry:`) is cut short by `online` or by the
//    page becoming visible; a live stream or a connect in flight is left alone (the idle
//    watchdog judges a live stream).
// 3. With `closeWhenHiddenMs`, a stream closed because the page stayed hidden reopens only
//    when the page is visible again (`online` alone does not reopen it), resuming from
//    `lastEventId`.
// 4. The returned function removes both listeners and the hidden timer (`close()`).

/**
 * @param {object} sub the Subscription (its wake/sleep/later/clearTimer)
 * @param {number|undefined|null} closeWhenHiddenMs close the stream after this long hidden
 * @returns {(() => void) | null} removes the listeners, or null when not in a page
 */
export function watchPage(sub, closeWhenHiddenMs) {
  const doc = globalThis.document;
  if (typeof globalThis.addEventListener !== "function" || typeof doc?.addEventListener !== "function") return null;
  let hiddenTimer = null;
  const onOnline = () => sub.wake("reconnect", false);
  const onVisibility = () => {
    if (doc.visibilityState === "hidden") {
      if (closeWhenHiddenMs != null && hiddenTimer === null) {
        hiddenTimer = sub.later(closeWhenHiddenMs, () => {
          hiddenTimer = null;
          sub.sleep();
        });
      }
    } else {
      sub.clearTimer(hiddenTimer);
      hiddenTimer = null;
      sub.wake("reconnect", true);
    }
  };
  globalThis.addEventListener("online", onOnline);
  doc.addEventListener("visibilitychange", onVisibility);
  if (doc.visibilityState === "hidden") onVisibility();
  return () => {
    globalThis.removeEventListener("online", onOnline);
    doc.removeEventListener("visibilitychange", onVisibility);
    sub.clearTimer(hiddenTimer);
    hiddenTimer = null;
  };
}
