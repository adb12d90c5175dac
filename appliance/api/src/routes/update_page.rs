//! The Settings page's section on the appliance's version and updates: what runs, how
//! the last update went, and a form that uploads a bundle to `POST /api/update` (with
//! the page's CSRF token in a header: the body is the bundle itself) and then shows the
//! install's progress from `GET /api/update`.

use super::pages::esc;
use super::ui::Frame;
use crate::error::ApiError;
use crate::state::AppState;

pub(super) fn section(state: &AppState, frame: &Frame) -> Result<String, ApiError> {
    let Ok(v) = super::update::view(state) else {
        return Ok("<h2 id=\"update\">Updates</h2><p class=\"muted\" id=\"update-off\">This daemon does not update an appliance image.</p>".into());
    };
    let slot = v.running_slot.as_deref().map_or(String::new(), |s| {
        format!(" from root slot {}", esc(&s.to_uppercase()))
    });
    let outcome = v.summary.as_ref().map_or(String::new(), |s| {
        let class = if v.outcome.as_deref() == Some("rolled_back") {
            "error"
        } else {
            "ok"
        };
        format!(
            "<p class=\"{class}\" id=\"update-outcome\" role=\"status\">{}</p>",
            esc(s)
        )
    });
    let progress = match (&v.phase, &v.detail) {
        (Some(phase), Some(detail)) => format!(
            "{} {}%: {}",
            esc(phase),
            v.percent.unwrap_or(0),
            esc(detail)
        ),
        _ => String::new(),
    };
    Ok(format!(
        "<h2 id=\"update\">Updates</h2>\
         <p>Running <strong id=\"update-running\">Watchgrid {}</strong>{slot}.</p>{outcome}\
         <form id=\"update-form\" method=\"post\" action=\"/api/update\">{}\
         <label for=\"update-file\">Update bundle (<code>watchgrid-VERSION-x86_64.update</code>)</label>\
         <input id=\"update-file\" name=\"bundle\" type=\"file\" accept=\".update\" required>\
         <label><input id=\"update-reboot\" type=\"checkbox\"> Reboot into it once it is written</label>\
         <button type=\"submit\" id=\"update-upload\">Check and install</button></form>\
         <p id=\"update-progress\" role=\"status\" aria-live=\"polite\">{progress}</p>\
         <p class=\"muted\">The bundle's signature, hashes and architecture are checked before \
         anything is written; it goes into the root slot that is not running, and the running \
         version boots again by itself if the new one does not come up healthy. \
         (Uploading needs script in the browser; without it, use <code>POST /api/update</code>.)</p>",
        esc(&v.running_version),
        frame.field(),
    ))
}

/// The form's script, part of `/static/app.js`.
pub(super) const SCRIPT: &str = "(function () {\n\
  var form = document.getElementById('update-form');\n\
  if (!form || !window.fetch) { return; }\n\
  var out = document.getElementById('update-progress');\n\
  function show(text, error) { out.textContent = text; out.className = error ? 'error' : ''; }\n\
  function poll() {\n\
    fetch('/api/update', { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (v) {\n\
      if (v.phase) { show(v.phase + ' ' + (v.percent || 0) + '%: ' + v.detail, v.phase === 'failed'); }\n\
      if (v.busy || v.phase === 'verifying' || v.phase === 'writing') { setTimeout(poll, 1000); }\n\
    });\n\
  }\n\
  form.addEventListener('submit', function (e) {\n\
    e.preventDefault();\n\
    var file = document.getElementById('update-file').files[0];\n\
    if (!file) { return; }\n\
    var reboot = document.getElementById('update-reboot').checked;\n\
    show('Uploading ' + file.name + '\\u2026', false);\n\
    fetch('/api/update' + (reboot ? '?reboot=true' : ''), {\n\
      method: 'POST', credentials: 'same-origin', body: file,\n\
      headers: { 'content-type': 'application/octet-stream', 'x-csrf-token': form.querySelector('input[name=csrf]').value }\n\
    }).then(function (r) {\n\
      return r.json().then(function (j) {\n\
        if (!r.ok) { throw new Error(j.error || r.statusText); }\n\
        show('Checked; installing\\u2026', false);\n\
        poll();\n\
      });\n\
    }).catch(function (err) { show('Refused: ' + err.message, true); });\n\
  });\n\
})();\n";
