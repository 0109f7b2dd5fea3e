// A PgJDBC session whose statements are server-prepared (prepareThreshold
// in the URL) and whose search_path is set, used before and after a pause
// long enough for sluice to detach it from its node. Prints each result.
// Run as a single source file: java -cp postgresql.jar Detach.java URL PAUSE_MS
import java.sql.*;

public class Detach {
    public static void main(String[] args) throws Exception {
        long pause = Long.parseLong(args[1]);
        try (Connection c = DriverManager.getConnection(args[0], "postgres", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("SET search_path = pool_clients, public");
            }
            PreparedStatement ps = c.prepareStatement("SELECT v * ? FROM t");
            for (int round = 0; round < 2; round++) {
                for (int i = 1; i <= 3; i++) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        System.out.println("round " + round + ": " + r.getInt(1));
                    }
                }
                Thread.sleep(pause);
            }
        }
    }
}
