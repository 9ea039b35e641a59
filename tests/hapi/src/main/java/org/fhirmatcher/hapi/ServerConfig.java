package org.fhirmatcher.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.springframework.beans.BeansException;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

import java.time.Duration;
import java.util.Properties;
import javax.sql.DataSource;

/**
 * Spring wiring of the HAPI FHIR JPA server (R4, H2).
 *
 * HAPI's JPA configuration classes supply the DAOs, search, terminology, Batch2 and bulk export
 * beans; this class supplies what they expect from the host application: the data source, the
 * entity manager factory, the transaction manager, storage/partition/subscription settings, a
 * binary storage service, and the {@link RestfulServer} servlet that {@link HapiTestServer}
 * mounts at /fhir/*.
 */
@Configuration
@EnableTransactionManagement
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	ThreadPoolFactoryConfig.class,
	// in-memory message channels (IBrokerClient) that Batch2 uses to dispatch work chunks
	SubscriptionChannelConfig.class
})
public class ServerConfig {

	/** System properties set by {@link HapiTestServer#main}. */
	static final String PROP_JDBC_URL = "hapi.test.jdbcUrl";
	static final String PROP_STRICT = "fhirmatcher.strict";

	static final String PROP_DEFAULT_PAGE_SIZE = "hapi.test.defaultPageSize";
	static final String PROP_MAX_PAGE_SIZE = "hapi.test.maxPageSize";
	static final String PROP_BATCH2_MAINTENANCE_MILLIS = "hapi.test.batch2MaintenanceMillis";
	/** Loading a benchmark's data: skip the per-write checks a one-off load of consistent data
	 *  does not need (HAPI's mass ingestion mode, referential integrity on write). */
	static final String PROP_BULK_LOAD = "hapi.test.bulkLoad";

	@Bean(destroyMethod = "close")
	public BasicDataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		ds.setDriverClassName("org.h2.Driver");
		ds.setUrl(System.getProperty(PROP_JDBC_URL, "jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1"));
		ds.setUsername("sa");
		ds.setPassword("");
		ds.setMaxTotal(20);
		ds.setMaxWait(Duration.ofSeconds(30));
		return ds;
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties p = new Properties();
		p.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		p.put("hibernate.hbm2ddl.auto", "update");
		p.put("hibernate.format_sql", "false");
		p.put("hibernate.show_sql", "false");
		p.put("hibernate.jdbc.batch_size", "20");
		p.put("hibernate.cache.use_query_cache", "false");
		p.put("hibernate.cache.use_second_level_cache", "false");
		p.put("hibernate.cache.use_structured_entries", "false");
		p.put("hibernate.cache.use_minimal_puts", "false");
		p.put("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		// Hibernate Search with an in-memory Lucene index, for terminology only: CodeSystem
		// $subsumes and ValueSet $expand with is-a filters need it. Resources are not full-text
		// indexed (storageSettings), so token :text, string and date searches still use the SQL
		// indexes.
		p.put("hibernate.search.enabled", "true");
		p.put("hibernate.search.backend.type", "lucene");
		p.put("hibernate.search.backend.directory.type", "local-heap");
		p.put("hibernate.search.backend.analysis.configurer",
				"ca.uhn.fhir.jpa.search.HapiHSearchAnalysisConfigurers$HapiLuceneAnalysisConfigurer");
		p.put("hibernate.search.backend.lucene_version", "LATEST");
		p.put("hibernate.search.schema_management.strategy", "create");
		emf.setJpaProperties(p);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		JpaTransactionManager tm = new JpaTransactionManager();
		tm.setEntityManagerFactory(entityManagerFactory);
		return tm;
	}

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Client-assigned ids of any form (PUT Patient/abc, PUT Patient/123); server ids are UUIDs
		// so they can never collide with a client id.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// Tests create then search immediately: never serve a cached search result.
		s.setReuseCachedSearchResultsForMillis(null);
		// Deletes: DELETE Type?_tag=... may match many; tests clean up in any order.
		s.setAllowMultipleDelete(true);
		s.setDeleteEnabled(true);
		s.setEnforceReferentialIntegrityOnDelete(false);
		s.setExpungeEnabled(true);
		s.setDeleteExpungeEnabled(true);
		s.setAllowExternalReferences(true);
		// Bulk export: a fresh job for every kick-off; run jobs promptly.
		s.setEnableTaskBulkExportJobExecution(true);
		s.setEnableBulkExportJobReuse(false);
		s.setJobFastTrackingEnabled(true);
		s.setFetchSizeDefaultMaximum(intProp(PROP_MAX_PAGE_SIZE, 1000));
		// Hibernate Search is on for terminology only (see entityManagerFactory).
		s.setHibernateSearchIndexFullText(false);
		s.setAdvancedHSearchIndexing(false);
		s.setStoreResourceInHSearchIndex(false);
		if (Boolean.getBoolean(PROP_BULK_LOAD)) {
			s.setMassIngestionMode(true);
			s.setEnforceReferentialIntegrityOnWrite(false);
		}
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	/** Runs the Batch2 maintenance pass (which advances bulk export jobs) every few seconds. */
	@Bean
	public static BeanPostProcessor batch2MaintenanceFrequency() {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessBeforeInitialization(Object bean, String beanName) throws BeansException {
				if (bean instanceof JobMaintenanceServiceImpl svc) {
					svc.setScheduledJobFrequencyMillis(intProp(PROP_BATCH2_MAINTENANCE_MILLIS, 2000));
				}
				return bean;
			}
		};
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviderFactory,
			IJpaSystemProvider systemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			BulkDataExportProvider bulkDataExportProvider,
			ValueSetOperationProvider valueSetOperationProvider) {
		FhirContext ctx = systemDao.getContext();
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());

		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(resourceProviderFactory.createProviders());
		server.registerProvider(systemProvider);
		server.registerProvider(bulkDataExportProvider);
		server.registerProvider(valueSetOperationProvider); // ValueSet $expand, $validate-code

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("fhir-matcher test HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);

		pagingProvider.setDefaultPageSize(intProp(PROP_DEFAULT_PAGE_SIZE, 50));
		pagingProvider.setMaximumPageSize(intProp(PROP_MAX_PAGE_SIZE, 1000));
		server.setPagingProvider(pagingProvider);

		if (Boolean.getBoolean(PROP_STRICT)) {
			// Behave like Epic / Oracle Health: patient-scoped searches only, Group export only.
			server.registerInterceptor(new StrictEhrInterceptor());
		}
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		server.setDefaultPrettyPrint(false);
		return server;
	}

	static int intProp(String name, int dflt) {
		String v = System.getProperty(name);
		return v == null || v.isBlank() ? dflt : Integer.parseInt(v.trim());
	}
}
