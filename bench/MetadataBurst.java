// The metadata a DBeaver connect and schema browse asks through PgJDBC:
// the tables of a schema, then for each table its columns, primary key,
// foreign keys and indexes. Prints the wall time in milliseconds.
import java.sql.*;

public class MetadataBurst {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        String schema = args[1];
        long started = System.nanoTime();
        int calls = 0;
        try (Connection c = DriverManager.getConnection(url, "postgres", "")) {
            DatabaseMetaData md = c.getMetaData();
            java.util.List<String> tables = new java.util.ArrayList<>();
            try (ResultSet rs = md.getTables(null, schema, "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            calls++;
            for (String t : tables) {
                for (ResultSet rs : new ResultSet[] {
                        md.getColumns(null, schema, t, "%"),
                        md.getPrimaryKeys(null, schema, t),
                        md.getImportedKeys(null, schema, t),
                        md.getIndexInfo(null, schema, t, false, true)}) {
                    while (rs.next()) { }
                    rs.close();
                    calls++;
                }
            }
            System.out.println("tables=" + tables.size() + " calls=" + calls
                + " ms=" + (System.nanoTime() - started) / 1_000_000);
        }
    }
}
