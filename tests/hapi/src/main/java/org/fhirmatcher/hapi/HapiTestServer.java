package org.fhirmatcher.hapi;

import ca.uhn.fhir.rest.server.RestfulServer;
import jakarta.servlet.DispatcherType;
import org.eclipse.jetty.ee10.servlet.FilterHolder;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumSet;

/**
 * Entry point: starts the Spring context of {@link ServerConfig} and an embedded Jetty that
 * serves HAPI's RestfulServer at http://127.0.0.1:PORT/fhir.
 *
 * <pre>
 * java -jar hapi-test-server.jar --port 8080 [--data-dir DIR] [--auth-token TOKEN] [--token-endpoint URL] [--strict]
 * </pre>
 *
 * With --strict (or -Dfhirmatcher.strict=true) the server behaves like Epic / Oracle Health
 * endpoints: patient-scoped searches only, no system-level $export; see {@link StrictEhrInterceptor}.
 *
 * Without --data-dir the H2 database is in memory (lost on exit); with it, the database lives in
 * DIR/h2/ and survives a restart. System properties -Dhapi.test.port / -Dhapi.test.dataDir are
 * accepted too.
 *
 * With --auth-token (or -Dfhirmatcher.auth.token) every request under /fhir/* needs
 * "Authorization: Bearer TOKEN", except GET /fhir/metadata and GET
 * /fhir/.well-known/smart-configuration; with --token-endpoint (or
 * -Dfhirmatcher.auth.tokenEndpoint) the latter serves a SMART configuration naming that URL. See
 * {@link BearerAuthFilter}. Without either, no filter is installed at all.
 */
public final class HapiTestServer {

	private static final Logger ourLog = LoggerFactory.getLogger(HapiTestServer.class);
	private static final String HOST = "127.0.0.1";
	private static final String USAGE = "usage: java -jar hapi-test-server.jar --port PORT [--data-dir DIR]"
			+ " [--auth-token TOKEN] [--token-endpoint URL]";
	static final String PROP_AUTH_TOKEN = "fhirmatcher.auth.token";
	static final String PROP_TOKEN_ENDPOINT = "fhirmatcher.auth.tokenEndpoint";

	private HapiTestServer() {}

	public static void main(String[] args) throws Exception {
		long t0 = System.nanoTime();
		int port = Integer.parseInt(System.getProperty("hapi.test.port", "8080"));
		String dataDir = System.getProperty("hapi.test.dataDir");
		String authToken = System.getProperty(PROP_AUTH_TOKEN);
		String tokenEndpoint = System.getProperty(PROP_TOKEN_ENDPOINT);
		boolean authFlag = authToken != null && !authToken.isBlank();
		boolean endpointFlag = tokenEndpoint != null && !tokenEndpoint.isBlank();
		for (int i = 0; i < args.length; i++) {
			String a = args[i];
			if (a.equals("--port") && i + 1 < args.length) {
				port = Integer.parseInt(args[++i]);
			} else if (a.startsWith("--port=")) {
				port = Integer.parseInt(a.substring("--port=".length()));
			} else if (a.equals("--data-dir") && i + 1 < args.length) {
				dataDir = args[++i];
			} else if (a.startsWith("--data-dir=")) {
				dataDir = a.substring("--data-dir=".length());
			} else if (a.equals("--auth-token") && i + 1 < args.length) {
				authToken = args[++i];
				authFlag = true;
			} else if (a.startsWith("--auth-token=")) {
				authToken = a.substring("--auth-token=".length());
				authFlag = true;
			} else if (a.equals("--strict")) {
				System.setProperty(ServerConfig.PROP_STRICT, "true");
			} else if (a.equals("--token-endpoint") && i + 1 < args.length) {
				tokenEndpoint = args[++i];
				endpointFlag = true;
			} else if (a.startsWith("--token-endpoint=")) {
				tokenEndpoint = a.substring("--token-endpoint=".length());
				endpointFlag = true;
			} else {
				// never echo the argument: it may be a token
				System.err.println(USAGE);
				System.exit(2);
			}
		}
		// A flag given with an empty value is an error; a blank system property means "off".
		try {
			if (authFlag) {
				BearerAuthFilter.checkToken(authToken);
			}
			if (endpointFlag) {
				tokenEndpoint = tokenEndpoint.trim();
				BearerAuthFilter.checkTokenEndpoint(tokenEndpoint);
			}
		} catch (IllegalArgumentException e) {
			System.err.println("error: " + e.getMessage()); // never contains the token
			System.err.println(USAGE);
			System.exit(2);
		}
		BearerAuthFilter authFilter =
				authFlag || endpointFlag ? new BearerAuthFilter(authFlag ? authToken : null, endpointFlag ? tokenEndpoint : null) : null;
		authToken = null;

		String jdbcUrl;
		if (dataDir != null && !dataDir.isBlank()) {
			Path dbDir = Path.of(dataDir).toAbsolutePath().resolve("h2");
			Files.createDirectories(dbDir);
			// DB_CLOSE_ON_EXIT=FALSE: the database is closed by our shutdown hook (after Spring),
			// not by H2's own hook while HAPI is still stopping.
			jdbcUrl = "jdbc:h2:file:" + dbDir.resolve("hapi") + ";DB_CLOSE_ON_EXIT=FALSE;TRACE_LEVEL_FILE=0";
		} else {
			jdbcUrl = "jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1";
		}
		System.setProperty(ServerConfig.PROP_JDBC_URL, jdbcUrl);
		ourLog.info("Starting HAPI FHIR test server on {}:{} with database {}{}", HOST, port, jdbcUrl,
				Boolean.getBoolean(ServerConfig.PROP_STRICT) ? " (strict: patient-scoped searches only)" : "");

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(ServerConfig.class);
		RestfulServer restfulServer = spring.getBean(RestfulServer.class);

		Server jetty = new Server();
		ServerConnector connector = new ServerConnector(jetty);
		connector.setHost(HOST);
		connector.setPort(port);
		jetty.addConnector(connector);

		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		ServletHolder holder = new ServletHolder("fhir", restfulServer);
		holder.setInitOrder(1);
		context.addServlet(holder, "/fhir/*");
		if (authFilter != null) {
			// Same mapping as the servlet: the filter sees every request HAPI would handle.
			context.addFilter(new FilterHolder(authFilter), "/fhir/*", EnumSet.of(DispatcherType.REQUEST));
			ourLog.info("Authorization gate on: bearer token {}; SMART configuration {}",
					authFilter.requiresToken()
							? "required for /fhir/* except GET /fhir/metadata and GET /fhir/.well-known/smart-configuration"
							: "not required",
					endpointFlag ? "at /fhir/.well-known/smart-configuration, token_endpoint " + tokenEndpoint : "off (404)");
		}
		jetty.setHandler(context);
		jetty.setStopTimeout(5000);

		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			ourLog.info("Stopping HAPI FHIR test server");
			try {
				jetty.stop();
			} catch (Exception e) {
				ourLog.warn("Error stopping Jetty", e);
			}
			try {
				spring.close();
			} catch (Exception e) {
				ourLog.warn("Error closing Spring context", e);
			}
			if (jdbcUrl.startsWith("jdbc:h2:file:")) {
				try (var c = java.sql.DriverManager.getConnection(jdbcUrl, "sa", "");
						var st = c.createStatement()) {
					st.execute("SHUTDOWN");
				} catch (Exception e) {
					ourLog.debug("H2 shutdown: {}", e.toString());
				}
			}
			System.out.println("HAPI FHIR test server stopped");
			System.out.flush();
		}, "hapi-shutdown"));

		jetty.start();
		long ms = (System.nanoTime() - t0) / 1_000_000;
		String msg = "HAPI FHIR test server ready at http://" + HOST + ":" + port + "/fhir (started in " + ms + " ms)";
		ourLog.info(msg);
		System.out.println(msg);
		System.out.flush();
		jetty.join();
	}
}
