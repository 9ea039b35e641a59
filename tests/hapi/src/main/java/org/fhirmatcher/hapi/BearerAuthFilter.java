package org.fhirmatcher.hapi;

import jakarta.servlet.Filter;
import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.ServletRequest;
import jakarta.servlet.ServletResponse;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Enumeration;
import java.util.Locale;

/**
 * Optional authorization gate in front of HAPI's RestfulServer, mapped to the same {@code /fhir/*}
 * as the servlet, so it sees every request HAPI can see: reads, searches, paging links
 * ({@code /fhir?_getpages=...}), transactions, {@code $export} kick-off, status polling and the
 * {@code Binary} downloads.
 *
 * <ul>
 *   <li>With a token: every request needs {@code Authorization: Bearer TOKEN}, except
 *       {@code GET /fhir/metadata} and {@code GET /fhir/.well-known/smart-configuration}
 *       (matched on the raw request URI, exactly; any other spelling needs the token). A missing
 *       or wrong token gets 401, {@code WWW-Authenticate: Bearer realm="fhir"} and an
 *       OperationOutcome. Tokens are compared in constant time (SHA-256 digests of both, compared
 *       with {@link MessageDigest#isEqual}, so neither content nor length leaks).</li>
 *   <li>With a token endpoint: {@code GET /fhir/.well-known/smart-configuration} answers the SMART
 *       configuration JSON; without one that path is 404.</li>
 * </ul>
 *
 * The token itself is never logged.
 */
public final class BearerAuthFilter implements Filter {

	static final String FHIR_PATH = "/fhir";
	static final String METADATA_PATH = FHIR_PATH + "/metadata";
	static final String SMART_CONFIG_PATH = FHIR_PATH + "/.well-known/smart-configuration";

	private static final byte[] UNAUTHORIZED_BODY = ("{\"resourceType\":\"OperationOutcome\",\"issue\":[{"
			+ "\"severity\":\"error\",\"code\":\"login\",\"diagnostics\":\"missing or invalid bearer token\"}]}")
			.getBytes(StandardCharsets.UTF_8);
	private static final byte[] NOT_FOUND_BODY = ("{\"resourceType\":\"OperationOutcome\",\"issue\":[{"
			+ "\"severity\":\"error\",\"code\":\"not-found\","
			+ "\"diagnostics\":\"no SMART configuration: the server was started without --token-endpoint\"}]}")
			.getBytes(StandardCharsets.UTF_8);

	/** SHA-256 of the expected token, or null: no token needed. */
	private final byte[] myTokenDigest;
	/** The smart-configuration document, or null: 404. */
	private final byte[] mySmartConfiguration;

	/**
	 * @param theToken         bearer token every request must carry, or null/blank for none
	 * @param theTokenEndpoint absolute http(s) URL to advertise as token_endpoint, or null/blank
	 */
	public BearerAuthFilter(String theToken, String theTokenEndpoint) {
		myTokenDigest = isBlank(theToken) ? null : sha256(theToken);
		mySmartConfiguration = isBlank(theTokenEndpoint) ? null : smartConfiguration(theTokenEndpoint);
	}

	/** Throws IllegalArgumentException (message without the value) if the token is unusable. */
	public static void checkToken(String theToken) {
		if (theToken == null || theToken.isEmpty()) {
			throw new IllegalArgumentException("the auth token is empty");
		}
		for (int i = 0; i < theToken.length(); i++) {
			char c = theToken.charAt(i);
			if (c <= 0x20 || c >= 0x7f) {
				throw new IllegalArgumentException(
						"the auth token must be printable ASCII without spaces (it is sent in an HTTP header)");
			}
		}
	}

	/** Throws IllegalArgumentException if the URL is not an absolute http(s) URL. */
	public static void checkTokenEndpoint(String theUrl) {
		URI uri;
		try {
			uri = new URI(theUrl);
		} catch (Exception e) {
			throw new IllegalArgumentException("the token endpoint is not a valid URL: " + theUrl);
		}
		String scheme = uri.getScheme() == null ? "" : uri.getScheme().toLowerCase(Locale.ROOT);
		if (!(scheme.equals("http") || scheme.equals("https")) || uri.getHost() == null) {
			throw new IllegalArgumentException("the token endpoint must be an absolute http(s) URL: " + theUrl);
		}
	}

	public boolean requiresToken() {
		return myTokenDigest != null;
	}

	@Override
	public void doFilter(ServletRequest theRequest, ServletResponse theResponse, FilterChain theChain)
			throws IOException, ServletException {
		if (!(theRequest instanceof HttpServletRequest req) || !(theResponse instanceof HttpServletResponse resp)) {
			throw new ServletException("not an HTTP request");
		}
		// The raw (undecoded, unnormalised) path, as HAPI itself reads it.
		String uri = req.getRequestURI();
		String path = uri == null ? "" : uri.substring(Math.min(uri.length(), req.getContextPath().length()));
		boolean get = "GET".equals(req.getMethod());

		if (get && path.equals(SMART_CONFIG_PATH)) {
			if (mySmartConfiguration == null) {
				send(resp, HttpServletResponse.SC_NOT_FOUND, "application/fhir+json;charset=utf-8", NOT_FOUND_BODY);
			} else {
				resp.setHeader("Cache-Control", "no-store");
				send(resp, HttpServletResponse.SC_OK, "application/json;charset=utf-8", mySmartConfiguration);
			}
			return;
		}
		if (myTokenDigest != null && !(get && path.equals(METADATA_PATH)) && !authorized(req)) {
			resp.setHeader("WWW-Authenticate", "Bearer realm=\"fhir\"");
			send(resp, HttpServletResponse.SC_UNAUTHORIZED, "application/fhir+json;charset=utf-8", UNAUTHORIZED_BODY);
			return;
		}
		theChain.doFilter(req, resp);
	}

	private boolean authorized(HttpServletRequest theRequest) {
		Enumeration<String> values = theRequest.getHeaders("Authorization");
		if (values == null || !values.hasMoreElements()) {
			return false;
		}
		String value = values.nextElement();
		if (values.hasMoreElements() || value == null) {
			return false; // more than one Authorization header: ambiguous, refuse
		}
		value = value.trim();
		int sp = value.indexOf(' ');
		if (sp < 0 || !value.substring(0, sp).equalsIgnoreCase("Bearer")) {
			return false;
		}
		String presented = value.substring(sp + 1).trim();
		return MessageDigest.isEqual(myTokenDigest, sha256(presented));
	}

	private static void send(HttpServletResponse theResponse, int theStatus, String theContentType, byte[] theBody)
			throws IOException {
		theResponse.setStatus(theStatus);
		theResponse.setContentType(theContentType);
		theResponse.setContentLength(theBody.length);
		theResponse.getOutputStream().write(theBody);
		theResponse.flushBuffer();
	}

	private static byte[] smartConfiguration(String theTokenEndpoint) {
		String json = "{\"token_endpoint\":" + jsonString(theTokenEndpoint)
				+ ",\"grant_types_supported\":[\"client_credentials\"]"
				+ ",\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\",\"client_secret_basic\"]"
				+ ",\"token_endpoint_auth_signing_alg_values_supported\":[\"RS384\",\"ES384\"]"
				+ ",\"scopes_supported\":[\"system/*.rs\",\"system/ResearchStudy.cu\",\"system/ResearchSubject.cu\"]"
				+ ",\"capabilities\":[\"client-confidential-asymmetric\",\"client-confidential-symmetric\"]}";
		return json.getBytes(StandardCharsets.UTF_8);
	}

	static String jsonString(String theValue) {
		StringBuilder b = new StringBuilder(theValue.length() + 2).append('"');
		for (int i = 0; i < theValue.length(); i++) {
			char c = theValue.charAt(i);
			switch (c) {
				case '"' -> b.append("\\\"");
				case '\\' -> b.append("\\\\");
				case '\n' -> b.append("\\n");
				case '\r' -> b.append("\\r");
				case '\t' -> b.append("\\t");
				default -> {
					if (c < 0x20 || c == 0x2028 || c == 0x2029) {
						b.append(String.format("\\u%04x", (int) c));
					} else {
						b.append(c);
					}
				}
			}
		}
		return b.append('"').toString();
	}

	private static byte[] sha256(String theValue) {
		try {
			return MessageDigest.getInstance("SHA-256").digest(theValue.getBytes(StandardCharsets.UTF_8));
		} catch (NoSuchAlgorithmException e) {
			throw new IllegalStateException(e); // every JRE has SHA-256
		}
	}

	private static boolean isBlank(String theValue) {
		return theValue == null || theValue.isBlank();
	}
}
