// What DBeaver and DataGrip ask through PgJDBC's DatabaseMetaData when they
// open a connection and browse a schema, printed one fact per line so that
// the output through sluice can be compared with the output direct.
import java.sql.*;

public class MetaData {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, "postgres", "")) {
            DatabaseMetaData md = c.getMetaData();
            print("schemas", md.getSchemas(), "TABLE_SCHEM");
            print("tables", md.getTables(null, "shop", "%", new String[] {"TABLE", "VIEW"}), "TABLE_NAME", "TABLE_TYPE", "REMARKS");
            print("columns", md.getColumns(null, "shop", "%", "%"), "TABLE_NAME", "COLUMN_NAME", "TYPE_NAME", "IS_NULLABLE");
            print("primary keys", md.getPrimaryKeys(null, "shop", "orders"), "COLUMN_NAME", "PK_NAME");
            print("imported keys", md.getImportedKeys(null, "shop", "orders"), "PKTABLE_NAME", "FKCOLUMN_NAME");
            print("type info", md.getTypeInfo(), "TYPE_NAME");
            // Reading an enum column: PgJDBC resolves the column's type by OID.
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT status FROM shop.orders ORDER BY id LIMIT 1")) {
                ResultSetMetaData rmd = rs.getMetaData();
                rs.next();
                System.out.println("enum column: " + rmd.getColumnTypeName(1) + " = " + rs.getString(1));
                System.out.println("enum column table: " + rmd.getTableName(1) + "." + rmd.getColumnName(1));
            }
        }
    }

    static void print(String what, ResultSet rs, String... columns) throws SQLException {
        int n = 0;
        while (rs.next()) {
            StringBuilder line = new StringBuilder(what).append(":");
            for (String col : columns) line.append(" ").append(rs.getString(col));
            System.out.println(line);
            n++;
        }
        System.out.println(what + " count: " + n);
        rs.close();
    }
}
