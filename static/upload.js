// Shows how far a record-file upload has got: a large file can take a while on a slow line.
// Without this script (or in an old browser) the form posts as an ordinary form.
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  for (const form of document.querySelectorAll('form[data-upload-progress]')) {
    form.addEventListener('submit', (event) => {
      const xhr = new XMLHttpRequest();
      if (!xhr.upload || !window.FormData) return;
      event.preventDefault();
      const bar = form.querySelector('progress');
      const status = form.querySelector('[data-upload-status]');
      const say = (text) => { status.textContent = text; };
      bar.hidden = false;
      form.querySelector('button[type=submit]').disabled = true;
      xhr.upload.addEventListener('progress', (e) => {
        if (!e.lengthComputable) return;
        bar.max = e.total;
        bar.value = e.loaded;
        say(`Sending your record file: ${Math.round((e.loaded * 100) / e.total)}%`);
      });
      xhr.upload.addEventListener('load', () => say('Sent. Checking and importing your record…'));
      xhr.addEventListener('load', () => {
        // The answer is the page the form would have shown.
        document.documentElement.innerHTML = xhr.responseText;
        window.scrollTo(0, 0);
      });
      xhr.addEventListener('error', () => {
        say('The upload stopped. Nothing was imported; please try again.');
        form.querySelector('button[type=submit]').disabled = false;
      });
      xhr.open('POST', form.action);
      xhr.send(new FormData(form));
    });
  }
});
