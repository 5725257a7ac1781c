// airdock console: the few behaviours a page needs beyond HTML. Loaded from /ui/static
// (the Content-Security-Policy allows no inline script). No framework, no build step.
(function () {
  'use strict';
  var root = document.documentElement;
  var KEY = 'airdock-theme';

  // The theme: the system's choice unless the toggle chose one (set before first paint).
  function applyTheme(t) {
    if (t === 'light' || t === 'dark') root.setAttribute('data-theme', t);
    else root.removeAttribute('data-theme');
  }
  try { applyTheme(localStorage.getItem(KEY)); } catch (e) { /* storage off: system theme */ }

  function current() {
    var t = root.getAttribute('data-theme');
    if (t) return t;
    return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  }

  document.addEventListener('click', function (ev) {
    var el = ev.target.closest ? ev.target.closest('button') : null;
    if (!el) return;
    if (el.id === 'theme') {
      var next = current() === 'dark' ? 'light' : 'dark';
      applyTheme(next);
      try { localStorage.setItem(KEY, next); } catch (e) { /* not kept */ }
      return;
    }
    var text = el.getAttribute('data-copy');
    if (text !== null) {
      var done = function () {
        var old = el.textContent;
        el.textContent = 'Copied';
        setTimeout(function () { el.textContent = old; }, 1200);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        // Plain HTTP on a lab address: select the text so that Ctrl+C copies it.
        var code = el.parentNode.querySelector('code');
        if (code) {
          var range = document.createRange();
          range.selectNodeContents(code);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          try { if (document.execCommand('copy')) done(); } catch (e) { /* selected at least */ }
        }
      }
    }
  });

  // Forms that change something ask first.
  document.addEventListener('submit', function (ev) {
    var msg = ev.target.getAttribute && ev.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) ev.preventDefault();
  }, true);

  // "/" focuses the page's filter, as on most tools.
  document.addEventListener('keydown', function (ev) {
    if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target.tagName;
    if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') return;
    var f = document.querySelector('input[type="search"]');
    if (f) { ev.preventDefault(); f.focus(); f.select(); }
  });
})();
