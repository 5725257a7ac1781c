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

  // The upload page: the file goes as the raw body of one XMLHttpRequest (fetch() reports
  // no upload progress), the server streams it into the importer and answers with the
  // report, or the refusal, as HTML to show.
  function human(n) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + ' ' + u[i];
  }
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (form.id !== 'upload-form') return;
    ev.preventDefault();
    var file = form.querySelector('input[type="file"]').files[0];
    var repo = form.querySelector('input[name="repository"]').value.trim();
    if (!file || !repo) return;
    var status = document.getElementById('upload-status');
    var bar = document.getElementById('upload-progress');
    var text = document.getElementById('upload-text');
    var result = document.getElementById('upload-result');
    var button = form.querySelector('button[type="submit"]');
    status.hidden = false;
    status.removeAttribute('data-done');
    result.innerHTML = '';
    bar.max = file.size || 1;
    bar.value = 0;
    button.disabled = true;
    var started = performance.now();
    var xhr = new XMLHttpRequest();
    xhr.open('POST', form.getAttribute('action') + '?repository=' + encodeURIComponent(repo) +
      '&name=' + encodeURIComponent(file.name));
    xhr.setRequestHeader('X-CSRF-Token', form.querySelector('input[name="_csrf"]').value);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = function (e) {
      var secs = Math.max((performance.now() - started) / 1000, 0.001);
      bar.value = e.loaded;
      text.textContent = human(e.loaded) + ' of ' + human(e.total || file.size) + ' · ' +
        human(e.loaded / secs) + '/s';
    };
    xhr.upload.onload = function () {
      bar.value = bar.max;
      text.textContent = human(file.size) + ' sent · importing…';
    };
    xhr.onload = function () {
      button.disabled = false;
      var secs = (performance.now() - started) / 1000;
      status.setAttribute('data-done', String(xhr.status));
      text.textContent = (xhr.status === 201 ? 'Imported: ' : 'Refused: ') + human(file.size) +
        ' in ' + secs.toFixed(1) + ' s';
      result.innerHTML = xhr.responseText;
    };
    xhr.onerror = function () {
      button.disabled = false;
      status.setAttribute('data-done', 'error');
      text.textContent = 'The upload failed: the connection was lost.';
    };
    xhr.send(file);
  });

  // "/" focuses the page's filter, as on most tools.
  document.addEventListener('keydown', function (ev) {
    if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target.tagName;
    if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') return;
    var f = document.querySelector('input[type="search"]');
    if (f) { ev.preventDefault(); f.focus(); f.select(); }
  });
})();
