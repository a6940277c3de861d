package pickple.bench;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Pickple runtime's reference counter ({@code pickple_runtime::reference::Counter}) on Kafka
 * Streams, the peer of runtime-bench and latency-bench.
 *
 * <pre>
 * counter [--brokers B] [--topic-prefix P] [--input T] [--output T] [--application-id A]
 *         [--state-dir D] [--threads N]
 * chain   --hops N [--brokers B] [--topic-prefix P] [--application-id A] [--state-dir D]
 * </pre>
 *
 * {@code counter} reads {@code <P>count-input}, counts per key in a persistent (RocksDB), cached
 * and changelogged store, and writes {@code {"key","count"}} to {@code <P>count-output} for every
 * input, under exactly_once_v2 with 100 ms commits and lz4, as the runtime's counter does.
 *
 * <p>{@code chain} runs N such hops as N Kafka Streams applications ({@code <A>1..<A>N}) in this
 * JVM, hop i reading {@code <P>chain-<i-1>} and writing {@code <P>chain-<i>}, at Kafka Streams'
 * defaults apart from exactly_once_v2. Each output carries the input's {@code sent_us}. One
 * application per hop, not one application with N sub-topologies: one Streams app commits all
 * its hops in one transaction per thread, whereas the runtime's chain (and the shop) is N
 * applications, each with its own group, transactional producer and commit cycle.
 *
 * <p>Brokers, prefix and state dir also come from PICKPLE_BROKERS, PICKPLE_TOPIC_PREFIX and
 * PICKPLE_STATE_DIR. Protocol with the benchmark: "first" on stdout when the counter handles its
 * first record (the start of the measured window); closing stdin stops the peer cleanly, so a
 * benchmark that dies takes its peer with it.
 */
public final class KStreamsPeer {
  private static final Logger LOG = LoggerFactory.getLogger(KStreamsPeer.class);
  private static final ObjectMapper JSON =
      new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);
  private static final String STORE = "counts";

  /** The runtime counter's input ({@code remind_in_ms} is not acted on: no bench asks). */
  record Input(Long remind_in_ms, Long sent_us) {}

  /** The runtime counter's output, field for field. */
  record Count(String key, long count) {}

  /** A chain hop's output: the count and the scheduled send time it carries along. */
  record Hop(String key, long count, long sent_us) {}

  static final class Counter implements Processor<String, String, String, String> {
    private final boolean chain;
    private final AtomicBoolean first;
    private ProcessorContext<String, String> context;
    private KeyValueStore<String, Long> counts;

    Counter(boolean chain, AtomicBoolean first) {
      this.chain = chain;
      this.first = first;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
      this.context = context;
      this.counts = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<String, String> record) {
      if (first != null && !first.get() && !first.getAndSet(true)) {
        System.out.println("first");
        System.out.flush();
      }
      String key = record.key();
      Input input;
      try {
        input = JSON.readValue(record.value(), Input.class);
      } catch (IOException | IllegalArgumentException e) {
        // The runtime dead-letters such a record; no bench sends one.
        LOG.warn("skipping an undecodable record: {}", e.toString());
        return;
      }
      if (key == null || (chain && input.sent_us() == null)) {
        LOG.warn("skipping a record without a key or a send time");
        return;
      }
      Long previous = counts.get(key);
      long count = (previous == null ? 0 : previous) + 1;
      counts.put(key, count);
      Object out = chain ? new Hop(key, count, input.sent_us()) : new Count(key, count);
      try {
        context.forward(record.withValue(JSON.writeValueAsString(out)));
      } catch (JsonProcessingException e) {
        throw new UncheckedIOException(e);
      }
    }
  }

  static Topology topology(String input, String output, boolean chain, AtomicBoolean first) {
    Topology topology = new Topology();
    topology.addSource(
        "input", Serdes.String().deserializer(), Serdes.String().deserializer(), input);
    topology.addProcessor("count", () -> new Counter(chain, first), "input");
    topology.addStateStore(
        Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.Long())
            .withCachingEnabled()
            .withLoggingEnabled(Map.of()),
        "count");
    topology.addSink(
        "output", output, Serdes.String().serializer(), Serdes.String().serializer(), "count");
    return topology;
  }

  static Properties config(Options o, String applicationId, boolean counter) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
    p.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads);
    if (counter) {
      // The runtime counter's settings; the chain stays at Kafka Streams' defaults (its
      // commit interval under exactly-once is 100 ms too).
      p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
      p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
    }
    return p;
  }

  public static void main(String[] args) throws Exception {
    Options o = Options.parse(args);
    List<KafkaStreams> apps = new ArrayList<>();
    if (o.mode.equals("counter")) {
      String appId = o.applicationId != null ? o.applicationId : o.prefix + "kstreams-counter";
      apps.add(
          new KafkaStreams(
              topology(o.input, o.output, false, new AtomicBoolean()), config(o, appId, true)));
    } else {
      String appId = o.applicationId != null ? o.applicationId : o.prefix + "kstreams-hop";
      for (int hop = 1; hop <= o.hops; hop++) {
        String from = o.prefix + "chain-" + (hop - 1);
        String to = o.prefix + "chain-" + hop;
        apps.add(new KafkaStreams(topology(from, to, true, null), config(o, appId + hop, false)));
      }
    }
    for (KafkaStreams app : apps) {
      app.setUncaughtExceptionHandler(
          e -> {
            // A peer that stopped processing would leave the benchmark waiting for records.
            LOG.error("stream thread died", e);
            Runtime.getRuntime().halt(1);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
          });
      app.start();
    }
    Runtime.getRuntime().addShutdownHook(new Thread(() -> close(apps)));
    while (System.in.read() != -1) {
      // The benchmark writes nothing; end of input is the signal to stop.
    }
    close(apps);
    System.exit(0);
  }

  static void close(List<KafkaStreams> apps) {
    for (KafkaStreams app : apps) {
      app.close(Duration.ofSeconds(30));
    }
  }

  static final class Options {
    String mode;
    String brokers = env("PICKPLE_BROKERS", "127.0.0.1:19092");
    String prefix = env("PICKPLE_TOPIC_PREFIX", "");
    String stateDir =
        env(
            "PICKPLE_STATE_DIR",
            Path.of(System.getProperty("java.io.tmpdir"), "kstreams-peer").toString());
    String input;
    String output;
    String applicationId;
    int hops = 1;
    int threads = 1;

    static String env(String name, String fallback) {
      String v = System.getenv(name);
      return v == null || v.isEmpty() ? fallback : v;
    }

    static Options parse(String[] args) {
      Options o = new Options();
      if (args.length == 0 || !(args[0].equals("counter") || args[0].equals("chain"))) {
        usage("first argument: counter or chain");
      }
      o.mode = args[0];
      for (int i = 1; i < args.length; i += 2) {
        if (i + 1 >= args.length) {
          usage("missing value for " + args[i]);
        }
        String v = args[i + 1];
        switch (args[i]) {
          case "--brokers" -> o.brokers = v;
          case "--topic-prefix" -> o.prefix = v;
          case "--input" -> o.input = v;
          case "--output" -> o.output = v;
          case "--application-id" -> o.applicationId = v;
          case "--state-dir" -> o.stateDir = v;
          case "--hops" -> o.hops = Integer.parseInt(v);
          case "--threads" -> o.threads = Integer.parseInt(v);
          default -> usage("unknown option " + args[i]);
        }
      }
      if (o.input == null) {
        o.input = o.prefix + "count-input";
      }
      if (o.output == null) {
        o.output = o.prefix + "count-output";
      }
      return o;
    }

    static void usage(String problem) {
      System.err.println(
          "kstreams-peer: "
              + problem
              + "\nusage: counter|chain [--brokers B] [--topic-prefix P] [--input T] [--output T]"
              + " [--application-id A] [--state-dir D] [--hops N] [--threads N]");
      System.exit(2);
    }
  }
}
