/* careshare console: uploads with a progress bar (tus for large files), lists that follow checks. */
(function () {
  "use strict";
  var TUS_FROM = 8 * 1000 * 1000; // larger files resume after a dropped connection
  var POLL_MS = 2000;

  function status(form, text, isError) {
    var out = form.querySelector(".upload-status");
    out.textContent = text;
    out.setAttribute("role", isError ? "alert" : "status");
    out.classList.toggle("error", !!isError);
  }

  function problemText(statusCode, body) {
    try {
      var p = JSON.parse(body);
      if (p && (p.title || p.detail)) {
        return [p.title ? p.title + "." : "", p.detail || ""].join(" ").trim();
      }
    } catch (ignored) { /* not JSON */ }
    return statusCode === 0
      ? "The connection was lost before the file arrived. Check the network and upload it again."
      : "The upload was not accepted (HTTP " + statusCode + "). Try again, or ask the clinic's support.";
  }

  // Times the server wrote in UTC (<time data-local>) are shown in the reader's own time zone.
  function localTimes(root) {
    root.querySelectorAll("time[data-local][datetime]").forEach(function (el) {
      var instant = new Date(el.getAttribute("datetime"));
      if (isNaN(instant.getTime())) return;
      el.title = el.textContent;
      el.textContent = instant.toLocaleString(undefined, {
        day: "2-digit", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
      });
      el.removeAttribute("data-local");
    });
  }
  localTimes(document);

  // Replace each [data-refresh] region of this page with its fresh copy; tick the new file if offered.
  function refresh(fileId) {
    return fetch(window.location.href, { credentials: "same-origin", headers: { "HX-Request": "refresh" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh][id]").forEach(function (old) {
          var now = fresh.getElementById(old.id);
          if (!now) return;
          // Files already ticked stay ticked: a second upload must not untick the first.
          old.querySelectorAll('input[name="file_id"]:checked').forEach(function (box) {
            var same = now.querySelector('input[name="file_id"][value="' + box.value + '"]');
            if (same && !same.disabled) same.checked = true;
          });
          old.replaceWith(now);
          localTimes(now);
        });
        if (fileId) {
          document.querySelectorAll('input[name="file_id"][value="' + fileId + '"]').forEach(function (box) {
            box.checked = true;
          });
        }
      });
  }

  function done(form, fileId, checking) {
    var bar = form.querySelector(".upload-progress");
    bar.value = 100;
    status(form, checking ? "Uploaded. Checking the file…" : "Uploaded.", false);
    form.reset();
    refresh(fileId);
  }

  function plainUpload(form, file) {
    var bar = form.querySelector(".upload-progress");
    var body = new FormData();
    body.append("file", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.uploadUrl);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    };
    xhr.onload = function () {
      if (xhr.status === 201 || xhr.status === 202) {
        var made = JSON.parse(xhr.responseText);
        done(form, made.id, xhr.status === 202);
      } else {
        bar.hidden = true;
        status(form, problemText(xhr.status, xhr.responseText), true);
        refresh(null); // a refused file is listed with its reason
      }
    };
    xhr.onerror = function () {
      bar.hidden = true;
      status(form, problemText(0, ""), true);
    };
    xhr.send(body);
  }

  function resumableUpload(form, file) {
    var bar = form.querySelector(".upload-progress");
    var upload = new window.tus.Upload(file, {
      endpoint: form.dataset.tusUrl,
      chunkSize: 8 * 1000 * 1000,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata: { filename: file.name },
      removeFingerprintOnSuccess: true,
      onProgress: function (sent, total) { bar.value = Math.round((100 * sent) / total); },
      onError: function (error) {
        bar.hidden = true;
        var r = error.originalResponse;
        status(form, problemText(r ? r.getStatus() : 0, r ? r.getBody() : ""), true);
        refresh(null);
      },
      onSuccess: function (payload) {
        var id = payload && payload.lastResponse ? payload.lastResponse.getHeader("Careshare-File-Id") : null;
        done(form, id, false);
      },
    });
    upload.findPreviousUploads().then(function (previous) {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form.upload[data-upload-url]");
    if (!form) return;
    event.preventDefault();
    var input = form.querySelector('input[type="file"]');
    var file = input.files && input.files[0];
    if (!file) {
      status(form, "Choose a file first.", true);
      return;
    }
    var limit = Number(form.dataset.maxBytes || 0);
    if (limit && file.size > limit) {
      status(form, "This file is larger than the " + form.dataset.maxLabel + " allowed here. Choose a smaller file.", true);
      return;
    }
    var bar = form.querySelector(".upload-progress");
    bar.hidden = false;
    bar.value = 0;
    status(form, "Uploading " + file.name + "…", false);
    if (form.dataset.tusUrl && window.tus && window.tus.isSupported && file.size >= TUS_FROM) {
      resumableUpload(form, file);
    } else {
      plainUpload(form, file);
    }
  });

  // While a file on the page is being checked, follow it until it is ready or refused.
  window.setInterval(function () {
    if (document.querySelector('[data-refresh] [data-status="processing"]')) refresh(null);
  }, POLL_MS);
})();
