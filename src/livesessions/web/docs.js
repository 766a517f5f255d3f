// Swagger UI on this service's own document; everything it loads is served
// from here (/docs/*), nothing from elsewhere.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // No validator badge: it would send the document to a third party.
  validatorUrl: null,
});
