"""Review web app: sign-in, worklist, synchronized longitudinal viewer (NiiVue) and radiologist QA.

The data plane's ``create_app`` includes :data:`router`. Pages are server-rendered Jinja2
templates; the study view is one ES module (``static/viewer.js``) over the NiiVue bundle that
``make web`` builds from npm into ``neurorad/server/static/dist/niivue.js``. See docs/review.md.
"""

from neurorad.server.web.router import router

__all__ = ["router"]
